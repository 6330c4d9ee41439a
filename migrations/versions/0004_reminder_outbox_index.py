"""scheduled_reminders: index outbox_id, drop the unused (status, due_at) index

Reminder messages are written when the dispatcher sends them, from the reminder rows that point at their
outbox row, and the compliance gate reads the same rows: both look them up by outbox_id, once per send.
Nothing reads reminders by (status, due_at), and planning inserts millions of them: that index only cost writes.

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
    with op.batch_alter_table("scheduled_reminders", schema=None) as batch_op:
        batch_op.create_index("ix_scheduled_reminders_outbox_id", ["outbox_id"], unique=False)
        batch_op.drop_index("ix_reminders_due")


def downgrade() -> None:
    with op.batch_alter_table("scheduled_reminders", schema=None) as batch_op:
        batch_op.create_index("ix_reminders_due", ["status", "due_at"], unique=False)
        batch_op.drop_index("ix_scheduled_reminders_outbox_id")
