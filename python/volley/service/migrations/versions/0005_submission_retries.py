"""Per-submission retries: ``submissions.max_retries_on_system_failure``, the submitter's
override of the endpoint's setting, which the outbox writes into the task messages it
republishes.  NULL (every submission made before, and every upstream SDK's) keeps the
endpoint's setting.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("submissions", sa.Column("max_retries_on_system_failure", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("max_retries_on_system_failure")
