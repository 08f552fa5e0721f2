"""Pattern names to graphs: a new pattern plugs in by adding one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph.graph import StateGraph

from graphs import (
    discussion,
    process_judge,
    rlad,
    sdv,
    self_consistency,
    single,
    spc_game,
    spc_search,
)
from graphs.common import PatternConfig


@dataclass(frozen=True)
class Pattern:
    name: str
    summary: str
    config_model: type[PatternConfig]
    build_graph: Callable[[], StateGraph]
    initial_state: Callable[[str, Any], dict[str, Any]]
    recursion_limit: Callable[[Any], int]
    judged: bool = True
    """Whether the run's answer is judged against ``config.reference_answer``: a solution's
    answer is, and so is a judge's flagged step (against the labelled one); a game's answer is
    its result, while its reference is the problem's answer."""


def _pattern(
    name: str,
    summary: str,
    module: Any,
    config_model: type[PatternConfig],
    *,
    judged: bool = True,
) -> Pattern:
    return Pattern(
        name=name,
        summary=summary,
        config_model=config_model,
        build_graph=module.build_graph,
        initial_state=module.initial_state,
        recursion_limit=module.recursion_limit,
        judged=judged,
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
        _pattern(
            "rlad",
            "RLAD: an abstraction player proposes K hints, a solution player solves M times "
            "with each, majority vote",
            rlad,
            rlad.RladConfig,
        ),
        _pattern(
            "spc_search",
            "SPC-guided search: a critic vets each step, rejected steps are resampled; "
            "parallel trajectories, majority vote",
            spc_search,
            spc_search.SpcSearchConfig,
        ),
        _pattern(
            "spc_game",
            "SPC self-play game: a sneaky generator plants an error in a correct step, "
            "roll-outs check it, a critic judges it; zero-sum rewards",
            spc_game,
            spc_game.SpcGameConfig,
            judged=False,
        ),
        _pattern(
            "sdv",
            "Solve-Detect-Verify (FlexiVe): a detector stops the solver once it is done; k fast "
            "checks, slow ones when they disagree; refinement with the verifier's feedback",
            sdv,
            sdv.SdvConfig,
        ),
        _pattern(
            "process_judge",
            "ProcessBench judge: a verifier names the earliest wrong step of a given solution, "
            "or -1 (what `thinktank eval-critic` scores)",
            process_judge,
            process_judge.ProcessJudgeConfig,
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
