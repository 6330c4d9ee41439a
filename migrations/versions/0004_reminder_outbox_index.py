"""index scheduled_reminders.outbox_id

Reminder messages are rendered when the dispatcher sends them, from the reminder rows that point at their
outbox row: the dispatcher (and the console timeline's preview) look those rows up by outbox_id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_scheduled_reminders_outbox_id", "scheduled_reminders", ["outbox_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_scheduled_reminders_outbox_id", table_name="scheduled_reminders")
