"""The per-user cap on queued tasks: an index of each user's unpublished tasks, so a submission
counts its owner's outbox without reading the owner's other tasks (which may be millions: the
results of the last 14 days).  Partial, like ``ix_tasks_unpublished``: as small as the outbox.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_tasks_unpublished_owner", "tasks", ["owner_id"],
        postgresql_where=sa.text("published = false"), sqlite_where=sa.text("published = 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_unpublished_owner", table_name="tasks")
