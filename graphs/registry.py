"""Pattern names to graphs: a new pattern plugs in by adding one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph.graph import StateGraph

from graphs import discussion, self_consistency, single
from graphs.common import PatternConfig


@dataclass(frozen=True)
class Pattern:
    name: str
    summary: str
    config_model: type[PatternConfig]
    build_graph: Callable[[], StateGraph]
    initial_state: Callable[[str, Any], dict[str, Any]]
    recursion_limit: Callable[[Any], int]


def _pattern(name: str, summary: str, module: Any, config_model: type[PatternConfig]) -> Pattern:
    return Pattern(
        name=name,
        summary=summary,
        config_model=config_model,
        build_graph=module.build_graph,
        initial_state=module.initial_state,
        recursion_limit=module.recursion_limit,
    )


PATTERNS: dict[str, Pattern] = {
    p.name: p
    for p in (
        _pattern(
            "discussion",
            "CEO-managed expert discussion (M1): recruit, solve, critique, evaluate, in rounds",
            discussion,
            discussion.DiscussionConfig,
        ),
        _pattern("single", "one chain of thought", single, single.SingleConfig),
        _pattern(
            "self_consistency",
            "n samples, majority vote, early stop once decided",
            self_consistency,
            self_consistency.SelfConsistencyConfig,
        ),
    )
}


class UnknownPattern(KeyError):
    def __str__(self) -> str:
        return f"unknown pattern {self.args[0]!r}; known: {', '.join(sorted(PATTERNS))}"


def canonical_name(name: str) -> str:
    """``self-consistency`` and ``self_consistency`` name the same pattern."""
    return name.strip().lower().replace("-", "_")


def get_pattern(name: str) -> Pattern:
    try:
        return PATTERNS[canonical_name(name)]
    except KeyError:
        raise UnknownPattern(name) from None
