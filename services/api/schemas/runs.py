"""Request and response models of the runs resource."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]

MAX_PROBLEM_CHARS = 100_000


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(
        description="a pattern name from GET /v1/patterns", examples=["discussion"]
    )
    problem: str = Field(min_length=1, max_length=MAX_PROBLEM_CHARS, description="the problem text")
    config: dict[str, Any] = Field(
        default_factory=dict, description="the pattern's options; see its config schema"
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AnswerCheckView(BaseModel):
    correct: bool
    reason: str = Field(description="why the answer was judged so (roles/checking.py)")
    reference: str = Field(description="the reference answer from the run's config")


class RunView(BaseModel):
    id: str
    pattern: str
    status: RunStatus
    problem: str
    config: dict[str, Any]
    answer: str | None
    stop_reason: str | None
    error: str | None
    usage: Usage
    cost_usd: float = Field(description="token cost at the configured prices (0 for local models)")
    cancel_requested: bool
    trace_id: str | None
    trace_url: str | None = Field(
        description="the run's trace in the trace UI (settings.trace_url_template), when set"
    )
    answer_check: AnswerCheckView | None = Field(
        description="whether the answer matches config.reference_answer; null while the run "
        "is unfinished or when its config has no reference answer"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunList(BaseModel):
    items: list[RunView]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class TurnView(BaseModel):
    id: int
    key: str
    node: str
    round: int
    agent: str
    role: str
    role_description: str | None
    model: str
    adapter: str | None
    params: dict[str, Any]
    messages: list[dict[str, Any]]
    completion: str
    finish_reason: str | None
    parsed: dict[str, Any] | None
    parse_ok: bool
    parse_error: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    error: str | None
    created_at: datetime


class PatternView(BaseModel):
    name: str
    summary: str
    config_schema: dict[str, Any]
