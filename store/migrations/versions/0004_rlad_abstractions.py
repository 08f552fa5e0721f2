"""rlad abstractions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rlad_abstractions",
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
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("abstraction_index", sa.Integer(), nullable=True),
        sa.Column("abstraction", sa.Text(), nullable=True),
        sa.Column("generator_model", sa.String(length=200), nullable=True),
        sa.Column("generator_adapter", sa.String(length=200), nullable=True),
        sa.Column("leaked", sa.Boolean(), nullable=False),
        sa.Column("leak_reason", sa.Text(), nullable=True),
        sa.Column(
            "solutions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("reference_answer", sa.Text(), nullable=True),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("baseline_reward", sa.Float(), nullable=True),
        sa.Column("improvement", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_rlad_abstractions_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rlad_abstractions")),
        sa.UniqueConstraint("run_id", "key", name="uq_rlad_abstractions_run_id_key"),
    )
    with op.batch_alter_table("rlad_abstractions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rlad_abstractions_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rlad_abstractions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rlad_abstractions_run_id"))

    op.drop_table("rlad_abstractions")
