"""Result batches to the SDK: ``task_groups.result_batches``, true while the group's result queue
is read by a Volley SDK (it said so when it last submitted into, or reloaded, the group), so the
router may forward several results per message.  False for every group made before, and for any
group an upstream SDK last submitted into or reloaded.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("task_groups", sa.Column("result_batches", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("task_groups") as batch:
        batch.drop_column("result_batches")
