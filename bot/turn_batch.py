"""Many senders' next messages as one transaction: the inbox workers' fast path (PostgreSQL only).

Each message gets the same turn as ConversationService.receive would give it, but the reads (debtors,
conversations with their open invoices) and the writes (inbound messages, replies, outbox rows) are one statement
each for the whole batch, and there is one commit. A queued turn cost ~10 ms of CPU, most of it round trips and
per-statement work rather than the engine (docs/performance.md), so that work is shared by the batch.

The batch holds at most one message per conversation, so its turns are independent of each other; the
conversation locks are all taken, in key order, before anything is read, so a turn sees the state the previous
turn of its conversation committed. All or nothing: when any turn fails the transaction rolls back and the caller
runs those messages one by one, where a bad message fails alone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from bot.conversations import (
    SYNCHRONOUS_CHANNELS,
    ConversationService,
    Received,
    inbound_row,
    lock_key,
    open_conversations_and_invoices,
    outbound_messages,
)
from bot.domain import InboundMessage, Turn
from bot.identify import find_sole_debtors
from bot.models import Conversation, Debtor, Invoice, UTCDateTime
from bot.templates import TemplateRenderer


@dataclass(frozen=True, slots=True)
class _Item:
    message: InboundMessage
    debtor: Debtor
    conversation: Conversation
    invoices: list[Invoice]


def batchable(message: InboundMessage) -> bool:
    """A plain text message on an asynchronous channel; anything else (media only, a Telegram /start link, the
    web chat that answers in its response) takes the one-by-one path."""
    return (
        bool(message.text.strip())
        and bool(message.provider_message_id)
        and message.channel not in SYNCHRONOUS_CHANNELS
        and not message.metadata.get("start_payload")
    )


def receive_batch(service: ConversationService, messages: Sequence[InboundMessage]) -> dict[int, Received]:
    """Run the turns of the messages it can in one transaction; returns them by index into `messages`.

    A message left out (its sender is not exactly one known debtor, it is not `batchable`, or its conversation
    already has a message earlier in the batch) is for the caller to run one by one, after this returns.
    """
    if service.database.dialect != "postgresql":
        # SQLite's transaction holds the database's one write lock from its first statement: waiting for
        # conversation locks inside it could deadlock with a holder that needs that lock (see bot/inbound.py).
        return {}
    with service.database.unit_of_work() as uow:
        session = uow.session
        senders = uow.first_read(lambda session: _identified(session, messages))
        if not senders:
            return {}
        with contextlib.ExitStack() as held:
            for key in sorted({lock_key(debtor.id, message.channel) for message, debtor in senders.values()}):
                held.enter_context(service.locks.hold(key))
            received = _run_turns(service, session, _with_conversations(session, senders))
            uow.commit()
    return received


def _identified(session: Session, messages: Sequence[InboundMessage]) -> dict[int, tuple[InboundMessage, Debtor]]:
    """The batchable messages whose sender is one debtor, the earliest for each conversation, by index."""
    senders: dict[str, set[str]] = {}
    for message in messages:
        if batchable(message):
            senders.setdefault(message.channel, set()).add(message.sender)
    debtors = {channel: find_sole_debtors(session, channel, addresses) for channel, addresses in senders.items()}
    identified: dict[int, tuple[InboundMessage, Debtor]] = {}
    conversations: set[tuple[int, str]] = set()
    for index, message in enumerate(messages):
        debtor = debtors.get(message.channel, {}).get(message.sender) if batchable(message) else None
        if debtor is None or (debtor.id, message.channel) in conversations:
            continue
        conversations.add((debtor.id, message.channel))
        identified[index] = (message, debtor)
    return identified


def _with_conversations(session: Session, senders: dict[int, tuple[InboundMessage, Debtor]]) -> dict[int, _Item]:
    """Each message's open conversation (opened when there is none, all in one flush) and open invoices."""
    found: dict[tuple[int, str], tuple[Conversation | None, list[Invoice]]] = {}
    for channel in {message.channel for message, _ in senders.values()}:
        debtor_ids = [debtor.id for message, debtor in senders.values() if message.channel == channel]
        for debtor_id, read in open_conversations_and_invoices(session, debtor_ids, channel).items():
            found[(debtor_id, channel)] = read
    items = {}
    for index, (message, debtor) in senders.items():
        conversation, invoices = found.get((debtor.id, message.channel), (None, []))
        if conversation is None:
            conversation = Conversation(debtor_id=debtor.id, channel=message.channel, address=message.sender)
            session.add(conversation)
        items[index] = _Item(message, debtor, conversation, invoices)
    session.flush()
    return items


def _run_turns(service: ConversationService, session: Session, items: dict[int, _Item]) -> dict[int, Received]:
    turns = {
        index: service.turn(session, item.conversation, item.debtor, item.invoices, item.message)
        for index, item in items.items()
    }
    fresh = _insert_inbound(session, [(item.conversation, item.message, turns[index]) for index, item in items.items()])
    received = {
        index: Received((), duplicate=True, conversation_id=item.conversation.id)
        for index, item in items.items()
        if (item.message.channel, item.message.provider_message_id) not in fresh
    }
    now = service.clock()
    renderer = TemplateRenderer.from_session(session)
    written: dict[int, list[dict[str, Any]]] = {}
    for index, item in items.items():
        if index not in received:
            outputs = service.apply_turn(session, item.conversation, item.debtor, item.message, turns[index], now)
            written[index] = service.reply_rows(renderer, item.conversation, item.debtor, turns[index], outputs, now)
    message_ids = iter(_insert_replies(session, [row for rows in written.values() for row in rows], now))
    for index, rows in written.items():
        replies = outbound_messages(items[index].conversation, turns[index], rows, [next(message_ids) for _ in rows])
        received[index] = Received(replies, conversation_id=items[index].conversation.id)
    return received


def _insert_inbound(session: Session, inbound: list[tuple[Conversation, InboundMessage, Turn]]) -> set[tuple[str, str]]:
    """Insert-or-ignore every inbound message in one statement; the (channel, provider id) of those that were new
    (the others were seen before: a worker that died after their turn committed)."""
    rows = [inbound_row(conversation, message, turn) for conversation, message, turn in inbound]
    columns = {name: [row[name] for row in rows] for name in _UNNESTED}
    columns["media"] = [json.dumps(media) for media in columns["media"]]
    return {(channel, provider_id) for channel, provider_id in session.execute(_INSERT_INBOUND, columns)}


# The rows as one array per column: one short statement that psycopg and the server parse once, whatever the
# batch's size (a multi-row VALUES is a new statement text for every size, parsed and planned anew).
_UNNESTED = {
    "conversation_id": "integer", "debtor_id": "integer", "channel": "text", "body": "text", "media": "text",
    "provider_message_id": "text", "created_at": "timestamptz", "intent": "text", "confidence": "float8",
}  # fmt: skip
_INSERT_INBOUND = text(
    "INSERT INTO messages (direction, delivery_status, media, "
    f"{', '.join(name for name in _UNNESTED if name != 'media')}) "
    f"SELECT 'in', 'received', CAST(media AS json), {', '.join(name for name in _UNNESTED if name != 'media')} "
    f"FROM unnest({', '.join(f'CAST(:{name} AS {kind}[])' for name, kind in _UNNESTED.items())}) "
    f"AS new ({', '.join(_UNNESTED)}) "
    "ON CONFLICT (channel, provider_message_id) DO NOTHING RETURNING channel, provider_message_id"
).bindparams(bindparam("created_at", type_=postgresql.ARRAY(UTCDateTime())))


def _insert_replies(session: Session, rows: list[dict[str, Any]], now: datetime) -> list[int]:
    """Every reply of the batch and its outbox row in one statement; the message ids in the rows' order (the ids
    are drawn from the sequence in the statement itself, so no second round trip is needed to link the two)."""
    if not rows:
        return []
    columns = {name: [row[name] for row in rows] for name in _REPLY_COLUMNS}
    return list(session.scalars(_INSERT_REPLIES, columns | {"now": now}))


_REPLY_COLUMNS = {
    "conversation_id": "integer", "debtor_id": "integer", "channel": "text", "body": "text", "template_key": "text",
    "knowledge_source": "text",
}  # fmt: skip
_INSERT_REPLIES = text(f"""
WITH replies AS MATERIALIZED (
    SELECT nextval((SELECT CAST(pg_get_serial_sequence('messages', 'id') AS regclass))) AS id, r.*
    FROM unnest({", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _REPLY_COLUMNS.items())})
         WITH ORDINALITY AS r({", ".join(_REPLY_COLUMNS)}, n)
), stored AS (
    INSERT INTO messages (id, direction, media, delivery_status, created_at, {", ".join(_REPLY_COLUMNS)})
    SELECT id, 'out', CAST('[]' AS json), 'queued', :now, {", ".join(_REPLY_COLUMNS)} FROM replies
), queued AS (
    INSERT INTO outbox (message_id, channel, initiated_by, status, attempts, next_attempt_at, created_at)
    SELECT id, channel, 'reply', 'pending', 0, :now, :now FROM replies
)
SELECT id FROM replies ORDER BY n
""").bindparams(bindparam("now", type_=UTCDateTime()))
