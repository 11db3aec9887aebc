"""Initial schema: users, tokens, functions, endpoints, task groups, tasks.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _owner() -> sa.Column:
    return sa.Column(
        "owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_table(
        "functions",
        sa.Column("id", sa.String(36), primary_key=True),
        _owner(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("meta", sa.JSON, nullable=True),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_functions_owner_id", "functions", ["owner_id"])
    op.create_table(
        "endpoints",
        sa.Column("id", sa.String(36), primary_key=True),
        _owner(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("meta", sa.JSON, nullable=True),
        sa.Column("allowed_functions", sa.JSON, nullable=True),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("multi_user", sa.Boolean, nullable=False),
        sa.Column("locked_until", sa.Float, nullable=True),
        sa.Column("last_heartbeat", sa.Float, nullable=True),
        sa.Column("heartbeat_period", sa.Float, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("status_report", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_endpoints_owner_id", "endpoints", ["owner_id"])
    op.create_table(
        "task_groups",
        sa.Column("id", sa.String(36), primary_key=True),
        _owner(),
        sa.Column("has_queue", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_task_groups_owner_id", "task_groups", ["owner_id"])
    op.create_index("ix_task_groups_updated_at", "task_groups", ["updated_at"])
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(36), primary_key=True),
        _owner(),
        sa.Column(
            "task_group_id",
            sa.String(36),
            sa.ForeignKey("task_groups.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("function_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("exception", sa.Text, nullable=True),
        sa.Column("details", sa.JSON, nullable=True),
        sa.Column("completion_t", sa.Float, nullable=True),
        sa.Column("forwarded", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tasks_owner_id", "tasks", ["owner_id"])
    op.create_index("ix_tasks_endpoint_id", "tasks", ["endpoint_id"])
    op.create_index("ix_tasks_updated_at", "tasks", ["updated_at"])
    op.create_index("ix_tasks_group_created", "tasks", ["task_group_id", "created_at"])


def downgrade() -> None:
    for table in ("tasks", "task_groups", "endpoints", "functions", "tokens", "users"):
        op.drop_table(table)
