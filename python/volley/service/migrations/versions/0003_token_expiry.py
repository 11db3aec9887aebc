"""Token expiry and listing: ``tokens.prefix``, ``expires_at`` and ``last_used_at``.

Tokens that exist before this migration have no prefix (they are revoked by id) and no
``expires_at``: they expire ``token_ttl_s`` after they were created, like every token.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite adds columns in place (ALTER TABLE ADD COLUMN), no table rebuild
    op.add_column("tokens", sa.Column("prefix", sa.String(16), nullable=True))
    op.add_column("tokens", sa.Column("expires_at", sa.Float, nullable=True))
    op.add_column("tokens", sa.Column("last_used_at", sa.Float, nullable=True))
    op.create_index("ix_tokens_prefix", "tokens", ["prefix"])


def downgrade() -> None:
    op.drop_index("ix_tokens_prefix", table_name="tokens")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
        batch.drop_column("prefix")
