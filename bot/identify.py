"""Who wrote to us: the debtor behind a channel address, and linking a Telegram chat to a debtor."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, joinedload

from bot.debtors import canonical_phone
from bot.domain import InboundMessage
from bot.models import Conversation, Debtor

ADDRESS_COLUMN = {
    "sms": Debtor.phone,
    "whatsapp": Debtor.phone,
    "email": Debtor.email,
    "telegram": Debtor.telegram_chat_id,
}
# Built once per channel: the webhook looks a sender up on every message, and constructing the statement (the
# joinedload option above all) cost more CPU than running it.
_DEBTORS_AT_ADDRESS = {
    channel: select(Debtor).options(joinedload(Debtor.creditor)).where(column == bindparam("address"))
    for channel, column in ADDRESS_COLUMN.items()
}


def find_debtor_id(session: Session, channel: str, address: str) -> int | None:
    """The debtor with this address; when several creditors share a debtor's number, the one we last talked to."""
    debtor = find_debtor(session, channel, address)
    return debtor.id if debtor else None


def find_debtor(session: Session, channel: str, address: str) -> Debtor | None:
    """`find_debtor_id`'s debtor, loaded with its creditor (the conversation that follows needs both)."""
    statement = _DEBTORS_AT_ADDRESS.get(channel)
    if statement is None or not address:
        return None
    value = stored_address(channel, address)
    debtors = {debtor.id: debtor for debtor in session.scalars(statement, {"address": value})}
    if len(debtors) <= 1:
        return next(iter(debtors.values()), None)
    latest = session.scalar(
        select(Conversation.debtor_id)
        .where(Conversation.debtor_id.in_(debtors), Conversation.channel == channel)
        .order_by(Conversation.updated_at.desc())
        .limit(1)
    )
    return debtors[latest or max(debtors)]


def stored_address(channel: str, address: str) -> str:
    """A sender's address in the form debtors' addresses are stored in."""
    if channel in ("sms", "whatsapp"):
        return canonical_phone(address)
    return address.lower() if channel == "email" else address


def find_sole_debtors(session: Session, channel: str, addresses: Collection[str]) -> dict[str, Debtor]:
    """The debtor (with its creditor) at each address that belongs to exactly one debtor, in one statement.

    An address several debtors share is left out: which of them is meant is find_debtor's question.
    """
    column = ADDRESS_COLUMN.get(channel)
    if column is None:
        return {}
    values = {address: stored_address(channel, address) for address in addresses if address}
    if not values:
        return {}
    at_value: dict[str, list[Debtor]] = {}
    for debtor in session.scalars(_SOLE_DEBTOR_CANDIDATES[channel], {"addresses": list(set(values.values()))}):
        at_value.setdefault(getattr(debtor, column.key), []).append(debtor)
    sole = {value: debtors[0] for value, debtors in at_value.items() if len(debtors) == 1}
    return {address: sole[value] for address, value in values.items() if value in sole}


_SOLE_DEBTOR_CANDIDATES = {
    channel: select(Debtor)
    .options(joinedload(Debtor.creditor))
    .where(column.in_(bindparam("addresses", expanding=True)))
    for channel, column in ADDRESS_COLUMN.items()
}


class TelegramLinks:
    """Signed tokens for https://t.me/<bot>?start=<token>, sent to a debtor on another channel.

    Telegram allows only [A-Za-z0-9_-] (at most 64) in a start parameter, so this is `<id>_<mac>` rather
    than an itsdangerous token (which contains dots).
    """

    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(f"cobrabot.telegram-link:{secret_key}".encode()).digest()

    def token(self, debtor_id: int) -> str:
        return f"{debtor_id}_{self._mac(debtor_id)}"

    def debtor_id(self, token: str) -> int | None:
        number, _, mac = token.partition("_")
        if not number.isdigit() or not hmac.compare_digest(mac, self._mac(int(number))):
            return None
        return int(number)

    def _mac(self, debtor_id: int) -> str:
        digest = hmac.new(self._key, str(debtor_id).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()


def link_telegram_chat(session: Session, links: TelegramLinks, message: InboundMessage) -> int | None:
    """Link a Telegram chat to a debtor by a signed /start token, or by a shared contact whose phone matches.

    Identity is still verified in the conversation: a link only says which debtor the chat claims to be.
    """
    debtor_id = None
    if payload := message.metadata.get("start_payload"):
        debtor_id = links.debtor_id(str(payload))
    elif message.metadata.get("contact_user_matches") and (phone := message.metadata.get("contact_phone")):
        debtor_id = find_debtor_id(session, "sms", str(phone))
    debtor = session.get(Debtor, debtor_id) if debtor_id else None
    if debtor is None:
        return None
    debtor.telegram_chat_id = message.sender
    return debtor.id
