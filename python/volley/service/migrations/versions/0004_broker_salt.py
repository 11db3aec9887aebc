"""Broker password rotation: ``users.broker_salt`` and ``endpoints.broker_salt``, random, mixed
into each principal's broker password.  The empty salt derives the password exactly as before,
so existing broker users keep working after the upgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("users", "endpoints"):
        op.add_column(table, sa.Column("broker_salt", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    for table in ("endpoints", "users"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("broker_salt")
