"""The ``spc_games`` table: one row per SPC self-play game (:class:`roles.spc.SpcGame`).

Columns are named as the outcome's fields, so the store writes and reads rows without a
mapping; training reads games by round and result to build the critic's and the sneaky
generator's data.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from store.tables.runs import Base, OutcomeRow


class SpcGameRow(OutcomeRow, Base):
    __tablename__ = "spc_games"

    round: Mapped[int] = mapped_column(Integer)
    problem: Mapped[str] = mapped_column(Text)
    reference_answer: Mapped[str] = mapped_column(Text)
    solution_source: Mapped[str] = mapped_column(String(16))
    solver_model: Mapped[str] = mapped_column(String(200))
    step_index: Mapped[int] = mapped_column(Integer)
    steps_total: Mapped[int] = mapped_column(Integer)
    prefix: Mapped[list[Any]]
    original_step: Mapped[str] = mapped_column(Text)
    sneaky_model: Mapped[str] = mapped_column(String(200))
    sneaky_adapter: Mapped[str | None] = mapped_column(String(200))
    sneaky_turn: Mapped[str] = mapped_column(String(200))
    error_type: Mapped[str | None] = mapped_column(String(100))
    sneaky_plan: Mapped[str] = mapped_column(Text)
    sneaky_step: Mapped[str | None] = mapped_column(Text)
    rollouts: Mapped[int] = mapped_column(Integer)
    original_answers: Mapped[list[Any]]
    sneaky_answers: Mapped[list[Any]]
    original_success_rate: Mapped[float | None]
    sneaky_success_rate: Mapped[float | None]
    min_original_success: Mapped[float]
    max_sneaky_success: Mapped[float]
    valid: Mapped[bool]
    invalid_reason: Mapped[str | None] = mapped_column(String(32))
    critic_model: Mapped[str | None] = mapped_column(String(200))
    critic_adapter: Mapped[str | None] = mapped_column(String(200))
    critic_turn: Mapped[str | None] = mapped_column(String(200))
    critic_verdict: Mapped[str | None] = mapped_column(String(16))
    critic_original_turn: Mapped[str | None] = mapped_column(String(200))
    critic_original_verdict: Mapped[str | None] = mapped_column(String(16))
    result: Mapped[str] = mapped_column(String(32))
    critic_reward: Mapped[int] = mapped_column(Integer)
    sneaky_reward: Mapped[int] = mapped_column(Integer)
    paired_reward: Mapped[int | None] = mapped_column(Integer)
