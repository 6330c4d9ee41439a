"""The audit trail: every action by the bot, an agent, the API or the system, appended, never changed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from bot.models import AuditEvent


def record(session: Session, actor: str, action: str, subject: object, **data: Any) -> AuditEvent:
    """Append one event; `subject` is any model instance with an id (flushed first if new)."""
    if getattr(subject, "id", None) is None:
        session.flush()
    event = AuditEvent(
        actor=actor,
        action=action,
        subject_type=type(subject).__name__.lower(),
        subject_id=str(getattr(subject, "id", "")),
        data=data,
    )
    session.add(event)
    return event
