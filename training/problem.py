"""One problem to solve or judge, as every problem source gives it (``training.problems``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

GENERATOR_PREFIX = "gen:"


class Problem(BaseModel):
    id: str = Field(description="stable within its source; evaluations resume by it")
    problem: str
    answer: str | None = Field(
        default=None, description="the reference final answer; None when the source has none"
    )
    source: str = Field(description="the format or generator it came from, e.g. gsm8k, gen:linear")
    solution_steps: list[str] = Field(
        default_factory=list, description="a worked solution split into steps, when known"
    )
    first_error_step: int | None = Field(
        default=None,
        description="ProcessBench label: 0-based index of the earliest wrong step, -1 if all "
        "steps are right; None when the steps are not labelled",
    )
    meta: dict[str, Any] = Field(default_factory=dict)


class ProblemSourceError(ValueError):
    """A source that cannot be read: unknown generator, missing file, unrecognised format."""
