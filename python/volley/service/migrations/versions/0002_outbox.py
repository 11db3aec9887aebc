"""Idempotent submission and the task outbox: a ``submissions`` table (request ids, answers,
message headers) and, on ``tasks``, the stored arguments, the submission and a ``published``
flag.

Tasks that exist before this migration were published (or deleted when publishing failed), so
they start out ``published``; they have no stored arguments and are never republished.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("task_group_id", sa.String(36), nullable=False),
        sa.Column("tasks", sa.JSON, nullable=False),
        sa.Column("resource_specification", sa.JSON, nullable=True),
        sa.Column("result_serializers", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("owner_id", "request_id", name="uq_submissions_owner_request"),
    )
    op.create_index("ix_submissions_created_at", "submissions", ["created_at"])
    # SQLite adds columns in place (ALTER TABLE ADD COLUMN), no table rebuild
    op.add_column("tasks", sa.Column("submission_id", sa.String(36), nullable=True))
    op.add_column("tasks", sa.Column("payload", sa.Text, nullable=True))
    op.add_column(
        "tasks", sa.Column("published", sa.Boolean, nullable=False, server_default=sa.true())
    )
    op.create_index(
        "ix_tasks_unpublished", "tasks", ["created_at"],
        postgresql_where=sa.text("published = false"), sqlite_where=sa.text("published = 0"),
    )
    op.create_index(
        "ix_tasks_payload_held", "tasks", ["status"],
        postgresql_where=sa.text("payload IS NOT NULL"), sqlite_where=sa.text("payload IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_payload_held", table_name="tasks")
    op.drop_index("ix_tasks_unpublished", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("published")
        batch.drop_column("payload")
        batch.drop_column("submission_id")
    op.drop_index("ix_submissions_created_at", table_name="submissions")
    op.drop_table("submissions")
