"""Response models of the model versions resource (read-only: training registers them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelVersionView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str = Field(description="the version's name, never reused", examples=["policy-sft-v3"])
    role: str = Field(description="the logical model it serves, e.g. policy, critic")
    kind: str = Field(description="how it was trained: sft or rl")
    base_model: str = Field(description="the weights the adapter was trained on")
    adapter_path: str = Field(description="where the adapter lives on the training host")
    dataset_hash: str = Field(description="hash of the training data")
    metrics: dict[str, Any] = Field(description="what training measured, e.g. eval_loss")
    parent: str | None = Field(description="the version it was trained from, if any")
    training_run_id: str | None = Field(description="the training run that produced it")
    created_at: datetime


class ModelVersionList(BaseModel):
    items: list[ModelVersionView]
