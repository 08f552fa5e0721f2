"""evaluation items: their problem's position in the source, so items read in problem order

Items are written as their runs start, and with concurrency above 1 a later problem's run can
start first; the position keeps `thinktank eval show` and the exports in the source's order.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # items stored before this migration keep no position and read after the others, by id
    with op.batch_alter_table("evaluation_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluation_items", schema=None) as batch_op:
        batch_op.drop_column("position")
