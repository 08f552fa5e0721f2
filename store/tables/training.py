"""Tables of the training side: training runs (jobs) and the model versions they register.

A model version is an adapter trained on a base model: what the backends serve by name. Its
name carries a version (``policy-sft-v3``) and is never reused, so a server that caches adapters
by name can never serve stale weights (Ray Serve and vLLM both cache by name).

A training run is one launch of a trainer: its settings, where it has got to, and which process
runs it. Its ``model_name`` is reserved when the run is created, so two runs can never race to
register the same version, and its ``idempotency_key`` makes a repeated launch (a retried Celery
task, the same command typed twice) find the run that already exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from store.tables.runs import Base, new_run_id, utcnow

TRAINING_STATUSES = ("queued", "running", "succeeded", "failed", "interrupted")
"""``interrupted``: stopped by a signal or found dead; ``--resume`` continues it."""


class TrainingRun(Base):
    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_run_id)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    model_name: Mapped[str] = mapped_column(String(100), unique=True)
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    launcher: Mapped[str | None] = mapped_column(String(32))
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_run_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    role: Mapped[str] = mapped_column(String(64), index=True)
    base_model: Mapped[str] = mapped_column(Text)
    adapter_path: Mapped[str] = mapped_column(Text)
    parent: Mapped[str | None] = mapped_column(String(100))
    dataset_hash: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    training_run_id: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )
