"""messages.provider_message_id: up to 998 characters (was 128)

An email's Message-ID may run to a whole header line (RFC 5322: 998 characters); a debtor's email whose id was
longer than 128 characters failed to store (a 500 on PostgreSQL). Widening a varchar is a catalog change on
PostgreSQL, not a table rewrite.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "provider_message_id",
            existing_type=sa.String(length=128),
            type_=sa.String(length=998),
            existing_nullable=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "provider_message_id",
            existing_type=sa.String(length=998),
            type_=sa.String(length=128),
            existing_nullable=True,
        )
