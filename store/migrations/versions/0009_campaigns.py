"""self-play campaigns and their rounds

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=True),
        sa.Column("versions", JSON, nullable=False),
        sa.Column("driver", sa.String(length=16), nullable=False),
        sa.Column("driver_token", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", WHEN, server_default=sa.func.now(), nullable=False),
        sa.Column("heartbeat_at", WHEN, nullable=True),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    for column in ("kind", "status", "api_key_id", "created_at"):
        op.create_index(f"ix_campaigns_{column}", "campaigns", [column])
    op.create_table(
        "campaign_rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("steps", JSON, nullable=False),
        sa.Column("run_ids", JSON, nullable=False),
        sa.Column("datasets", JSON, nullable=False),
        sa.Column("training_runs", JSON, nullable=False),
        sa.Column("versions", JSON, nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("started_at", WHEN, server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "round", name="uq_campaign_rounds"),
    )


def downgrade() -> None:
    op.drop_table("campaign_rounds")
    for column in ("created_at", "api_key_id", "status", "kind"):
        op.drop_index(f"ix_campaigns_{column}", table_name="campaigns")
    op.drop_table("campaigns")
