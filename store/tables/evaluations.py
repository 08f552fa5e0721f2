"""The tables of evaluations: one row per evaluation, one per (problem, pattern) it scores.

Every item names the run that produced it, so each number of an evaluation's table can be
followed back to the run's stored turns (``thinktank runs show RUN_ID``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from store.tables.runs import Base, new_run_id, utcnow

EVALUATION_STATUSES = ("running", "finished", "interrupted")
ITEM_STATUSES = ("pending", "succeeded", "failed", "cancelled")
"""An item's status is its run's once the run has ended; ``pending`` until then."""


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_run_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="running")
    summary: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )
    finished_at: Mapped[datetime | None]


class EvaluationItem(Base):
    __tablename__ = "evaluation_items"
    __table_args__ = (
        UniqueConstraint(
            "evaluation_id", "problem_id", "pattern", name="uq_evaluation_items_problem_pattern"
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    evaluation_id: Mapped[str] = mapped_column(
        ForeignKey("evaluations.id", ondelete="CASCADE"), index=True
    )
    problem_id: Mapped[str] = mapped_column(String(200))
    pattern: Mapped[str] = mapped_column(String(64))
    # the problem's index in the evaluation's source: items are written in the order their
    # runs start, which concurrency shuffles, and read back in problem order
    position: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="pending")
    correct: Mapped[bool | None]
    answer: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    wall_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    finished_at: Mapped[datetime | None]
