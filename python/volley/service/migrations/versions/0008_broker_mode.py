"""How the service last started with the broker: whether every tenant shares one set of broker
credentials (no management API).  That mode serves one user, and `volley token create`, which
works on the database alone, reads here whether it may make a second one.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "broker_mode",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("shared", sa.Boolean, nullable=True),
        sa.Column("recorded_at", sa.Float, nullable=True),
    )
    # the one row, there from the start: writers lock it rather than race to insert it
    op.bulk_insert(table, [{"id": 1, "shared": None, "recorded_at": None}])


def downgrade() -> None:
    op.drop_table("broker_mode")
