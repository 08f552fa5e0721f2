"""What an evaluation is made of: its settings, its jobs, its items and its summaries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from graphs.patterns import get_pattern
from store.tables.evaluations import EvaluationItem
from store.tables.runs import Run
from training.problems import Problem

MIN_RUN_BUDGET = 16  # PatternConfig.token_budget's floor
MAX_PROBLEM_ID = 200  # evaluation_items.problem_id


class EvaluationError(ValueError):
    """Settings or problems an evaluation cannot run with; the message says why."""


class EvalConfig(BaseModel):
    """What ``thinktank eval`` runs: which patterns, on which problems, with what budget."""

    model_config = ConfigDict(extra="forbid")

    patterns: list[str] = Field(min_length=1, description="registered pattern names")
    source: str = Field(description="a problem file or a gen: spec (training.problems)")
    limit: int | None = Field(None, ge=1, description="first N problems of the source")
    seed: int = Field(0, description="seed of generated sources")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="pattern -> config fields for its runs"
    )
    budget_tokens: int | None = Field(
        None, ge=1, description="generated tokens each pattern may spend on the whole set"
    )
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="of the accuracy interval")
    name: str | None = Field(None, max_length=200, description="default: a hash of the settings")
    concurrency: int = Field(4, ge=1, le=256, description="runs executed at once")

    @field_validator("patterns")
    @classmethod
    def _known_patterns(cls, names: list[str]) -> list[str]:
        canonical = [get_pattern(name).name for name in names]
        duplicates = sorted({n for n in canonical if canonical.count(n) > 1})
        if duplicates:
            raise ValueError(f"pattern(s) listed twice: {', '.join(duplicates)}")
        return canonical

    def identity(self) -> dict[str, Any]:
        """The settings that decide the results; ``concurrency`` and the name do not."""
        return self.model_dump(mode="json", exclude={"name", "concurrency"})

    def evaluation_name(self) -> str:
        return self.name or default_name("eval", self.identity())


def default_name(prefix: str, identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{prefix}-{digest[:12]}"


@dataclass(frozen=True)
class Job:
    """One run an evaluation needs: a problem, a pattern and the pattern's config."""

    problem: Problem
    pattern: str
    config: dict[str, Any]


Scorer = Callable[[Job, Run], tuple[bool, str]]


class ItemResult(BaseModel):
    """How one (problem, pattern) pair came out; ``run_id`` leads to its transcript."""

    problem_id: str
    pattern: str
    run_id: str | None
    status: str = Field(description="pending, or the run's end: succeeded, failed, cancelled")
    correct: bool | None
    answer: str | None
    reference: str | None
    reason: str | None
    prompt_tokens: int
    completion_tokens: int
    wall_s: float | None

    @property
    def ended(self) -> bool:
        return self.status != "pending"

    @classmethod
    def from_row(cls, row: EvaluationItem) -> ItemResult:
        return cls.model_validate(row, from_attributes=True)


class Progress(BaseModel):
    """Where an evaluation stands; sent after each item ends (and once at the start)."""

    name: str
    total: int
    ended: int = 0
    resumed: int = Field(0, description="items already done before this call")
    correct: int = 0
    failed: int = 0
    last: ItemResult | None = None


ProgressCallback = Callable[[Progress], None]


class PatternSummary(BaseModel):
    pattern: str
    problems: int = Field(description="items whose run ended (succeeded, failed or cancelled)")
    pending: int = Field(description="items not finished (an interrupted evaluation)")
    correct: int
    failed: int = Field(description="runs that failed (they count as wrong)")
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    mean_tokens: float | None = Field(description="generated tokens per problem")
    mean_prompt_tokens: float | None
    mean_wall_s: float | None
    accuracy_per_1k_tokens: float | None = Field(
        description="correct answers per 1000 generated tokens"
    )
    total_tokens: int


class PairedComparison(BaseModel):
    """A pattern against the baseline on the problems both finished. Both ran on the same
    problems, so the comparison is paired: what counts is where they disagree (the one right
    where the other was wrong), not two accuracies with their separate intervals."""

    pattern: str
    baseline: str
    problems: int = Field(description="problems both runs ended on")
    both_correct: int
    only_pattern: int = Field(description="the pattern right where the baseline was wrong")
    only_baseline: int = Field(description="the baseline right where the pattern was wrong")
    neither: int
    difference: float | None = Field(description="pattern accuracy minus baseline accuracy")
    ci_low: float | None = Field(description="Newcombe's paired score interval (method 10)")
    ci_high: float | None
    p_value: float | None = Field(description="exact McNemar test, two-sided")


class EvalSummary(BaseModel):
    name: str
    evaluation_id: str
    source: str
    status: str
    problems: int
    confidence: float
    budget_tokens: int | None
    run_token_budget: int | None = Field(description="each run's token_budget in budget mode")
    patterns: list[PatternSummary]
    paired: list[PairedComparison] = Field(
        default_factory=list,
        description="every other pattern against the first listed, on the same problems",
    )
