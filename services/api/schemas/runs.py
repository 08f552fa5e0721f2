"""Request and response models of the runs resource."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    create_model,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from graphs.patterns import PATTERNS, Pattern
from services.api.schemas.wire import NUL, json_numbers

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]

MAX_PROBLEM_CHARS = 100_000
# A problem of whitespace alone (as str.strip sees it) is empty to create_run; the schema says
# so with "not", which generators handle far better than a pattern with 100,000 characters.
BLANK = {"pattern": r"^[\s\x1c-\x1f\x85]*$"}
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_time_text(value: object) -> object:
    """Only an ISO 8601 date-time: pydantic alone also takes a number as a Unix time."""
    if isinstance(value, str) and not DATE_TIME.match(value):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    """A zone-less time is taken as UTC. One within hours of year 1 or 9999 has no UTC twin
    that Python can hold; it is before or after every run, as the bound is."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


Moment = Annotated[datetime, BeforeValidator(_date_time_text), AfterValidator(_in_utc)]
"""A time a client sends: ISO 8601 with a zone (without one, UTC)."""


def check_config(pattern: Pattern, config: dict[str, Any]) -> None:
    """Raise pydantic's ValidationError unless ``config`` is ``pattern``'s, in JSON's own types
    as the schema states them (:mod:`services.api.schemas.wire`). The lenient pass goes first,
    as its reasons are the ones to read (NaN: "finite number", not "integer")."""
    pattern.config_model.model_validate(config)
    pattern.config_model.model_validate(json_numbers(config), strict=True)


def _run_request(pattern: Pattern) -> type[BaseModel]:
    """``POST /v1/runs``'s body for one pattern, as the OpenAPI document describes it."""
    config_model = pattern.config_model
    required = any(field.is_required() for field in config_model.model_fields.values())
    config_doc = f"the options of {pattern.name} (GET /v1/patterns has the same schema)"
    return create_model(
        f"{config_model.__name__.removesuffix('Config')}RunCreate",
        __config__=ConfigDict(extra="forbid"),
        pattern=(Literal[pattern.name], Field(description=pattern.summary)),
        problem=(
            str,
            Field(
                min_length=1,
                max_length=MAX_PROBLEM_CHARS,
                description="the problem text",
                json_schema_extra={"not": {"anyOf": [BLANK, NUL]}},
            ),
        ),
        config=(config_model, Field(description=config_doc))
        if required
        else (config_model, Field(default_factory=config_model, description=config_doc)),
    )


RUN_REQUESTS = TypeAdapter(
    Annotated[
        Union[tuple(_run_request(p) for p in PATTERNS.values())],  # noqa: UP007
        Field(discriminator="pattern"),
    ]
)


class RunCreate(BaseModel):
    """A run to queue. It is validated in two steps, so that an unknown pattern is named as
    such and a bad option as one of its pattern's: here the shape, then the pattern's config
    (execution.runner.create_run). The OpenAPI document shows both at once: one body per
    pattern, each with its config's schema."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(
        description="a pattern name from GET /v1/patterns", examples=["discussion"]
    )
    problem: str = Field(min_length=1, max_length=MAX_PROBLEM_CHARS, description="the problem text")
    config: dict[str, Any] = Field(
        default_factory=dict, description="the pattern's options; see its config schema"
    )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(RUN_REQUESTS.core_schema)


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
