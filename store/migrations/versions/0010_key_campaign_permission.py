"""api keys: whether a key may start campaigns (which train models), and how many at once

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # keys issued before this migration may not start campaigns until they are granted it
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "can_start_campaigns", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "max_running_campaigns", sa.Integer(), server_default=sa.text("1"), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("max_running_campaigns")
        batch_op.drop_column("can_start_campaigns")
