"""The table of RLAD abstraction records (:class:`roles.rlad.RladAbstraction`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from store.tables.runs import Base, OutcomeRow


class RladAbstractionRow(OutcomeRow, Base):
    """One abstraction (or the no-abstraction baseline) of a run, its solutions and rewards."""

    __tablename__ = "rlad_abstractions"

    problem: Mapped[str] = mapped_column(Text)
    abstraction_index: Mapped[int | None] = mapped_column(Integer)
    abstraction: Mapped[str | None] = mapped_column(Text)
    generator_model: Mapped[str | None] = mapped_column(String(200))
    generator_adapter: Mapped[str | None] = mapped_column(String(200))
    leaked: Mapped[bool] = mapped_column(default=False)
    leak_reason: Mapped[str | None] = mapped_column(Text)
    solutions: Mapped[list[Any]]
    reference_answer: Mapped[str | None] = mapped_column(Text)
    reward: Mapped[float | None] = mapped_column(Float)
    baseline_reward: Mapped[float | None] = mapped_column(Float)
    improvement: Mapped[float | None] = mapped_column(Float)
