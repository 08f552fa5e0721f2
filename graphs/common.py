"""What every pattern shares: the budget knobs of its config and small state reducers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.backends.serving_config import ADAPTER_NAME, check_adapter_name

MAX_CALL_TOKENS = 131_072
"""The most tokens one model call may be asked for: the longest context of the models served
here. Every ``*_max_tokens`` option stops at it, so a run's size is known when it is submitted."""
MAX_NAME_CHARS = 100
"""Logical model names and adapter names are short words (``policy``, ``critic-rl-v3``)."""
MAX_ANSWER_CHARS = 10_000
"""A reference answer is a final answer, not a solution."""
MAX_SOLUTION_CHARS = 100_000
"""A worked solution given to a game or a judge: as long as a problem may be."""
MAX_STEPS = 1000
"""Steps of a solution a judge reads, or a game may rewrite."""
MAX_ADAPTERS = 32


class PatternConfig(BaseModel):
    """Knobs every pattern has. Unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    token_budget: int | None = Field(
        8000,
        ge=16,
        le=10_000_000,
        description="generated tokens the whole run may spend, all agents together (null: no cap)",
    )
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling mass")
    adapters: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_ADAPTERS,
        description="logical model name -> LoRA adapter (a registered model version) its calls "
        "in this run use; a campaign plays each round with its newest versions this way",
        # what _adapter_names checks, so that the JSON schema admits only what it accepts
        json_schema_extra={
            "propertyNames": {"maxLength": MAX_NAME_CHARS},
            "additionalProperties": {
                "type": "string",
                "pattern": ADAPTER_NAME.pattern,
                "not": {"pattern": r"\.\."},
            },
        },
    )
    reference_answer: str | None = Field(
        None,
        max_length=MAX_ANSWER_CHARS,
        description="the known answer, never shown to the agents: the run's answer is judged "
        "against it (the API's answer_check)",
    )

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, adapters: dict[str, str]) -> dict[str, str]:
        for model, name in adapters.items():
            if len(model) > MAX_NAME_CHARS:
                raise ValueError(f"logical model names are at most {MAX_NAME_CHARS} characters")
            check_adapter_name(name)
        return adapters


def first_reason(old: str | None, new: str | None) -> str | None:
    """Parallel branches may each report why the run must stop; the first one stands."""
    return old if old else new


def extend_or_clear(old: list[Any] | None, new: list[Any] | None) -> list[Any]:
    """Parallel branches append; a node that writes ``None`` starts the list afresh."""
    if new is None:
        return []
    return [*(old or []), *new]
