"""Request and response models of the campaigns resource."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.backends.local.catalog import DEFAULT_MODEL
from training.campaigns.report import RoundReport


class CampaignCreate(BaseModel):
    """A self-play campaign to start. Problem sources are `gen:` specs or names of files in
    the server's `problems/` folder (under its data directory)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["spc", "rlad"] = Field(description="spc (critic vs sneaky generator) or rlad")
    name: str | None = Field(
        None, max_length=70, description="names its model versions (default: kind and time)"
    )
    rounds: int = Field(2, ge=1, le=1000)
    games_per_round: int = Field(8, ge=1, le=100_000)
    problems: str = Field("gen:mixed?difficulty=1&n=1000", max_length=500)
    eval_problems: str | None = Field(None, max_length=500)
    eval_limit: int = Field(16, ge=1, le=100_000)
    baseline: bool = Field(True, description="evaluate the starting models first (round 0)")
    concurrency: int = Field(4, ge=1, le=256)
    base: str = Field(
        DEFAULT_MODEL,
        max_length=200,
        description="the trained base model (default: the one the embedded default serves)",
    )
    game: dict[str, Any] = Field(default_factory=dict, description="options of every game run")
    train: dict[str, Any] = Field(default_factory=dict, description="RL trainer options")
    train_roles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="trainer options of one trained model (critic, sneaky; abstraction, "
        "policy), over train's",
    )
    balance: bool = Field(
        True,
        description="spc: from round 2 on, the games' critic is one version behind the sneaky "
        "generator's (the paper's balancing game)",
    )
    warm_start: dict[str, Any] | None = Field(
        None,
        description="round 0 builds SFT data for each trained role and trains its first "
        "version on it (options of `thinktank data warm-start`: n, seed, teacher...; {} for "
        "its defaults); null: start from the base",
    )
    warm_start_train: dict[str, Any] = Field(
        default_factory=dict, description="SFT trainer options of the warm-start trainings"
    )
    eval: dict[str, Any] = Field(default_factory=dict, description="evaluation run options")


class CampaignRoundView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    round: int = Field(description="0 is the baseline evaluation")
    steps: dict[str, Any] = Field(description="step -> status, started_at, finished_at")
    run_ids: list[str] = Field(description="the round's game runs (GET /v1/runs/{id})")
    datasets: dict[str, Any] = Field(description="logical model -> exported records")
    training_runs: dict[str, Any] = Field(description="logical model -> training run")
    versions: dict[str, Any] = Field(description="logical model -> model version trained")
    metrics: dict[str, Any] = Field(description="games, served and eval metrics")
    report: RoundReport | None = Field(
        None,
        description="the round on the learning curve: headline metric with its interval, "
        "games, valid share, rewards, final training losses",
    )
    started_at: datetime
    finished_at: datetime | None


class CampaignView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    round: int = Field(description="the round it is in (or ended in)")
    step: str | None = Field(description="the step it is in; null once finished")
    versions: dict[str, Any] = Field(description="logical model -> version it serves now")
    config: dict[str, Any]
    driver: str = Field(description="celery or embedded")
    error: str | None
    created_at: datetime
    heartbeat_at: datetime | None
    finished_at: datetime | None
    rounds: list[CampaignRoundView] = Field(default_factory=list)


class CampaignList(BaseModel):
    items: list[CampaignView]
