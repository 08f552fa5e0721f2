"""Tables of self-play campaigns: a campaign and one row per round.

A campaign's progress lives here, not in the queue: which round and step it is at, the model
versions it serves now, and each round's games, datasets, training runs and metrics. Whatever
drives it (a Celery chain per round, or the embedded driver) reads this to know what to do
next, so a campaign resumes at the step it was in after any crash.

``driver_token`` names the one driver allowed to advance the campaign. Resuming a campaign
gives it a new token, so a stale Celery message of an earlier driver (a retry that was
already scheduled, a redelivered task) finds the token changed and does nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from store.tables.runs import Base, new_run_id, utcnow

CAMPAIGN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_run_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    config: Mapped[dict[str, Any]]
    round: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[str | None] = mapped_column(String(16))
    versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    driver: Mapped[str] = mapped_column(String(16), default="embedded")
    driver_token: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    api_key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class CampaignRound(Base):
    __tablename__ = "campaign_rounds"
    __table_args__ = (UniqueConstraint("campaign_id", "round", name="uq_campaign_rounds"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    steps: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_ids: Mapped[list[Any]] = mapped_column(default=list)
    datasets: Mapped[dict[str, Any]] = mapped_column(default=dict)
    training_runs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    finished_at: Mapped[datetime | None]
