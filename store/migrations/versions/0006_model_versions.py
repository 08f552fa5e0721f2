"""model versions

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("config", _json(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", _json(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("launcher", sa.String(length=32), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_training_runs_idempotency_key")),
        sa.UniqueConstraint("model_name", name=op.f("uq_training_runs_model_name")),
    )
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_training_runs_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_training_runs_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_training_runs_status"), ["status"], unique=False)

    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("adapter_path", sa.Text(), nullable=False),
        sa.Column("parent", sa.String(length=100), nullable=True),
        sa.Column("dataset_hash", sa.String(length=64), nullable=False),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("config", _json(), nullable=False),
        sa.Column("training_run_id", sa.String(length=32), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("name", name=op.f("uq_model_versions_name")),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_model_versions_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_model_versions_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_versions_role"), ["role"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_model_versions_training_run_id"), ["training_run_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_training_run_id"))
        batch_op.drop_index(batch_op.f("ix_model_versions_role"))
        batch_op.drop_index(batch_op.f("ix_model_versions_kind"))
        batch_op.drop_index(batch_op.f("ix_model_versions_created_at"))
    op.drop_table("model_versions")

    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_runs_status"))
        batch_op.drop_index(batch_op.f("ix_training_runs_kind"))
        batch_op.drop_index(batch_op.f("ix_training_runs_created_at"))
    op.drop_table("training_runs")
