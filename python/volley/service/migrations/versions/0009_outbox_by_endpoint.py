"""The outbox by endpoint: ``ix_tasks_unpublished_endpoint (endpoint_id, created_at, id)``
replaces ``ix_tasks_unpublished (created_at)``.  Paging the outbox in creation order on the old
index, leaving out endpoints whose task queue is full, walked every waiting task of those
endpoints at each round; the outbox now finds the endpoints with waiting tasks by a loose scan
of the new index and pages each due one on it.  Partial, like the old one: as small as the
outbox.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _unpublished_index(name: str, columns: list[str]) -> None:
    op.create_index(name, "tasks", columns,
                    postgresql_where=sa.text("published = false"), sqlite_where=sa.text("published = 0"))


def upgrade() -> None:
    _unpublished_index("ix_tasks_unpublished_endpoint", ["endpoint_id", "created_at", "id"])
    op.drop_index("ix_tasks_unpublished", table_name="tasks")


def downgrade() -> None:
    _unpublished_index("ix_tasks_unpublished", ["created_at"])
    op.drop_index("ix_tasks_unpublished_endpoint", table_name="tasks")
