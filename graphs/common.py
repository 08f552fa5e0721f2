"""What every pattern shares: the budget knobs of its config and small state reducers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.backends.serving_config import check_adapter_name


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
        description="logical model name -> LoRA adapter (a registered model version) its calls "
        "in this run use; a campaign plays each round with its newest versions this way",
    )

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, adapters: dict[str, str]) -> dict[str, str]:
        for name in adapters.values():
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
