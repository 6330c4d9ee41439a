"""Bot-initiated messages (reminders, follow-ups): pick a channel the debtor can be reached on and has not
opted out of, render the template in their locale and queue it in the outbox."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.models import ConsentOptOut, Conversation, Debtor, Message, Outbox
from bot.templates import TemplateRenderer

logger = logging.getLogger(__name__)
ADDRESS_OF = {
    "sms": lambda debtor: debtor.phone,
    "whatsapp": lambda debtor: debtor.phone,
    "email": lambda debtor: debtor.email,
    "telegram": lambda debtor: debtor.telegram_chat_id,
}


@dataclass(frozen=True, slots=True)
class Queued:
    message_id: int | None
    channel: str | None
    reason: str  # "queued", or why nothing was queued


def opted_out_channels(session: Session, debtor_id: int) -> set[str]:
    rows = session.scalars(
        select(ConsentOptOut.channel).where(ConsentOptOut.debtor_id == debtor_id, ConsentOptOut.revoked_at.is_(None))
    )
    return set(rows)


def reachable_channel(session: Session, debtor: Debtor) -> str | None:
    """The debtor's first preferred channel that has an address and no opt-out."""
    blocked = opted_out_channels(session, debtor.id)
    if "all" in blocked:
        return None
    for channel in debtor.channel_preference or ["sms"]:
        address = ADDRESS_OF.get(channel, lambda _debtor: None)(debtor)
        if address and channel not in blocked:
            return channel
    return None


def queue_bot_message(
    session: Session, debtor: Debtor, template_key: str, variables: Mapping[str, Any], now: datetime
) -> Queued:
    """Render and queue one bot-initiated message; nothing is queued for a debtor who cannot be contacted."""
    channel = reachable_channel(session, debtor)
    if channel is None:
        return Queued(None, None, "no reachable channel without an opt-out")
    renderer = TemplateRenderer.from_session(session)
    text = renderer.render(template_key, debtor.locale, channel, variables)
    message = Message(
        conversation_id=_open_conversation_id(session, debtor.id, channel),
        debtor_id=debtor.id,
        direction="out",
        channel=channel,
        body=text,
        template_key=template_key,
        delivery_status="queued",
        created_at=now,
    )
    session.add(message)
    session.flush()
    session.add(Outbox(message_id=message.id, channel=channel, initiated_by="bot", next_attempt_at=now))
    logger.info("queued %s for debtor %s on %s", template_key, debtor.id, channel)
    return Queued(message.id, channel, "queued")


def _open_conversation_id(session: Session, debtor_id: int, channel: str) -> int | None:
    return session.scalar(
        select(Conversation.id)
        .where(Conversation.debtor_id == debtor_id, Conversation.channel == channel, Conversation.mode != "closed")
        .order_by(Conversation.id.desc())
        .limit(1)
    )
