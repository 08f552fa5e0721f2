"""spc games

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "spc_games",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("reference_answer", sa.Text(), nullable=False),
        sa.Column("solution_source", sa.String(length=16), nullable=False),
        sa.Column("solver_model", sa.String(length=200), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("steps_total", sa.Integer(), nullable=False),
        sa.Column("prefix", _json(), nullable=False),
        sa.Column("original_step", sa.Text(), nullable=False),
        sa.Column("sneaky_model", sa.String(length=200), nullable=False),
        sa.Column("sneaky_adapter", sa.String(length=200), nullable=True),
        sa.Column("sneaky_turn", sa.String(length=200), nullable=False),
        sa.Column("error_type", sa.String(length=100), nullable=True),
        sa.Column("sneaky_plan", sa.Text(), nullable=False),
        sa.Column("sneaky_step", sa.Text(), nullable=True),
        sa.Column("rollouts", sa.Integer(), nullable=False),
        sa.Column("original_answers", _json(), nullable=False),
        sa.Column("sneaky_answers", _json(), nullable=False),
        sa.Column("original_success_rate", sa.Double(), nullable=True),
        sa.Column("sneaky_success_rate", sa.Double(), nullable=True),
        sa.Column("min_original_success", sa.Double(), nullable=False),
        sa.Column("max_sneaky_success", sa.Double(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("invalid_reason", sa.String(length=32), nullable=True),
        sa.Column("critic_model", sa.String(length=200), nullable=True),
        sa.Column("critic_adapter", sa.String(length=200), nullable=True),
        sa.Column("critic_turn", sa.String(length=200), nullable=True),
        sa.Column("critic_verdict", sa.String(length=16), nullable=True),
        sa.Column("critic_original_turn", sa.String(length=200), nullable=True),
        sa.Column("critic_original_verdict", sa.String(length=16), nullable=True),
        sa.Column("result", sa.String(length=32), nullable=False),
        sa.Column("critic_reward", sa.Integer(), nullable=False),
        sa.Column("sneaky_reward", sa.Integer(), nullable=False),
        sa.Column("paired_reward", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_spc_games_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spc_games")),
        sa.UniqueConstraint("run_id", "key", name="uq_spc_games_run_id_key"),
    )
    with op.batch_alter_table("spc_games", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spc_games_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("spc_games", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spc_games_run_id"))

    op.drop_table("spc_games")
