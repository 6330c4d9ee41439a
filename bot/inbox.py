"""Inbound queue (COBRABOT_INBOUND_QUEUE=true): a webhook stores what its adapter parsed and answers as soon as
that one INSERT is committed; inbox workers run the conversations, in arrival order per sender.

Why: a webhook that runs the whole turn holds the provider's request for the engine and ~8 database round trips.
When a campaign's replies arrive together, requests queue, the provider times out and retries, and the retries
add to the burst. Accepting is one statement; the turns then run at the workers' pace.

Exactly once: an inbox row is deleted only after its turn has committed. A worker killed in between leaves the
row to be claimed again, and the turn's own dedupe (messages: channel + provider_message_id) makes the second
run a no-op, so a message is never answered twice and never lost.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Json
from sqlalchemy import Connection, Row, bindparam, delete, exists, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import aliased

from bot.domain import Clock, InboundMessage, Parsed
from bot.group_commit import GroupCommit
from bot.inbound import InboundService
from bot.models import InboxItem
from bot.store import Database

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
MAX_BACKOFF_SECONDS = 300

# Insert-or-ignore as text: SQLAlchemy cannot cache the dialects' ON CONFLICT constructs (see conversations.py).
_ACCEPT_COLUMNS = (
    "channel", "sender", "provider_message_id", "body", "media", "details", "received_at", "status", "attempts",
    "available_at",
)  # fmt: skip
_ACCEPT = text(
    f"INSERT INTO inbox ({', '.join(_ACCEPT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + name for name in _ACCEPT_COLUMNS)}) "
    "ON CONFLICT (channel, provider_message_id) DO NOTHING"
).bindparams(*(bindparam(name, type_=InboxItem.__table__.c[name].type) for name in _ACCEPT_COLUMNS))

# The oldest pending message of each sender, and only those: a sender's next message waits until the one before
# it is done (or has failed for good). On PostgreSQL the rows stay locked (SKIP LOCKED) by the claiming
# transaction while they are processed, so concurrent workers take disjoint senders, and a sender whose current
# message another worker holds is skipped rather than served out of order. The claim walks the inbox in id order
# and probes ix_inbox_sender once per candidate for an earlier pending row, so its cost follows the rows it
# passes over, not the whole backlog (a GROUP BY over every pending row grew with it).
_EARLIER = aliased(InboxItem)
_CLAIM = (
    select(*InboxItem.__table__.c)
    .where(
        InboxItem.status == "pending",
        InboxItem.available_at <= bindparam("now"),
        ~exists().where(
            _EARLIER.channel == InboxItem.channel,
            _EARLIER.sender == InboxItem.sender,
            _EARLIER.id < InboxItem.id,
            _EARLIER.status == "pending",
        ),
    )
    .order_by(InboxItem.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_DONE = delete(InboxItem).where(InboxItem.id.in_(bindparam("ids", expanding=True)))


class Inbox:
    """The accepting side: what webhooks call instead of running the conversation themselves."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock
        self._group = GroupCommit(self._insert_batch, name="inbox-accept")

    def accept(self, parsed: Parsed) -> Parsed:
        """Store the messages that carry a provider id; return what must still be handled now (delivery statuses,
        and any message without an id, which nothing could deduplicate on a second run)."""
        queued = [message for message in parsed.messages if message.provider_message_id]
        if queued:
            self._insert([self._row(message) for message in queued])
        rest = tuple(message for message in parsed.messages if not message.provider_message_id)
        return replace(parsed, messages=rest)

    def _row(self, message: InboundMessage) -> dict[str, Any]:
        return {
            "channel": message.channel,
            "sender": message.sender,
            "provider_message_id": message.provider_message_id,
            "body": message.text,
            "media": list(message.media_urls),
            "details": dict(message.metadata),
            "received_at": message.received_at,
            "status": "pending",
            "attempts": 0,
            "available_at": self.clock(),
        }

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        if self.database.dialect != "postgresql":
            self._insert_core(rows)
            return
        self._group.submit(rows)

    def _insert_batch(self, rows: Sequence[dict[str, Any]]) -> None:
        try:
            self._insert_autocommit(rows)
        except psycopg.OperationalError:
            # A pooled connection that died (database restart) fails its first statement. The rows are idempotent,
            # so they go again through SQLAlchemy, whose disconnect handling also retires every other connection
            # the pool holds from before the restart, instead of failing the webhooks.
            logger.warning("database connection lost while accepting a webhook; retrying on a fresh one")
            self._insert_core(rows)

    def _insert_core(self, rows: Sequence[dict[str, Any]]) -> None:
        for attempt in (1, 2):
            try:
                with self.database.engine.begin() as connection:
                    connection.execute(_ACCEPT, list(rows))
                return
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise

    def _insert_autocommit(self, rows: Sequence[dict[str, Any]]) -> None:
        """The hot path of queued webhooks: every row that arrived meanwhile (group commit) in one autocommitted
        multi-row INSERT on the pool's psycopg connection: one round trip and one commit, and none of
        SQLAlchemy's per-statement work, which cost twice the INSERT's own client CPU. Rows are idempotent."""
        pooled = self.database.engine.raw_connection()
        try:
            connection = pooled.driver_connection
            connection.autocommit = True
            try:
                with connection.cursor() as cursor:
                    cursor.execute(_accept_sql(len(rows)), [value for row in rows for value in _parameters(row)])
            finally:
                if not connection.broken:
                    connection.autocommit = False
        except psycopg.OperationalError:
            pooled.invalidate()  # not back into the pool: the next checkout opens a fresh connection
            raise
        finally:
            pooled.close()


@functools.lru_cache(maxsize=64)
def _accept_sql(count: int) -> str:
    row = f"({', '.join(['%s'] * len(_ACCEPT_COLUMNS))})"
    return (
        f"INSERT INTO inbox ({', '.join(_ACCEPT_COLUMNS)}) VALUES {', '.join([row] * count)} "
        "ON CONFLICT (channel, provider_message_id) DO NOTHING"
    )


def _parameters(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(Json(row[name]) if name in ("media", "details") else row[name] for name in _ACCEPT_COLUMNS)


@dataclass
class DrainReport:
    claimed: int = 0
    processed: int = 0
    retried: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"claimed": self.claimed, "processed": self.processed, "retried": self.retried, "failed": self.failed}


@dataclass
class InboxWorker:
    """Claims a batch of senders' next messages, runs each through InboundService, then settles the batch."""

    database: Database
    inbound: InboundService
    clock: Clock
    # A claim keeps its rows locked in one transaction until the whole batch has run: small batches keep that
    # transaction short (a turn with the LLM on may take seconds) at the price of one cheap claim query more.
    batch_size: int = 32
    threads: int = 1
    # A claim's turns as one transaction (bot/turn_batch.py, PostgreSQL), or each in its own on `threads`.
    batched: bool = True
    max_attempts: int = MAX_ATTEMPTS
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _local_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def run_once(self) -> DrainReport:
        if self.database.dialect == "postgresql":
            with self.database.engine.connect() as claim, claim.begin():
                items = self._claim(claim)
                outcomes = self._process(items)
                return self._settle(claim, items, outcomes)
        # SQLite: every transaction holds the database's one write lock (BEGIN IMMEDIATE), so the claim cannot
        # stay open while turns write; one drain at a time per process keeps the order instead.
        with self._local_lock:
            with self.database.engine.begin() as connection:
                items = self._claim(connection)
            outcomes = self._process(items)
            with self.database.engine.begin() as connection:
                return self._settle(connection, items, outcomes)

    def run(self, stop: threading.Event, idle_seconds: float = 0.2) -> None:
        """Drain until `stop` is set, resting `idle_seconds` whenever a batch comes back less than full."""
        while not stop.is_set():
            try:
                report = self.run_once()
            except DBAPIError:
                logger.exception("inbox drain failed; retrying in %.0f s", idle_seconds * 10)
                stop.wait(idle_seconds * 10)
                continue
            if report.claimed < self.batch_size:
                stop.wait(idle_seconds)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _claim(self, connection: Connection) -> Sequence[Row[Any]]:
        return connection.execute(_CLAIM, {"now": self.clock(), "limit": self.batch_size}).all()

    def _process(self, items: Sequence[Row[Any]]) -> list[BaseException | None]:
        messages = [as_inbound_message(item) for item in items]
        try:
            in_batch = self.inbound.handle_batch(messages) if self.batched and len(messages) > 1 else set()
        except Exception as exc:  # rolled back whole: its messages run one by one, where a bad one fails alone
            logger.warning("inbox batch of %d failed (%s); running it one by one", len(messages), type(exc).__name__)
            in_batch = set()
        outcomes: list[BaseException | None] = [None] * len(messages)
        rest = [index for index in range(len(messages)) if index not in in_batch]
        for index, outcome in zip(rest, self._one_by_one([messages[index] for index in rest]), strict=True):
            outcomes[index] = outcome
        return outcomes

    def _one_by_one(self, messages: list[InboundMessage]) -> list[BaseException | None]:
        if self.threads <= 1 or len(messages) <= 1:
            return [self._turn(message) for message in messages]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="inbox")
        # The batch holds at most one message per sender, so running them side by side keeps each sender's order.
        return list(self._pool.map(self._turn, messages))

    def _turn(self, message: InboundMessage) -> BaseException | None:
        try:
            self.inbound.handle(Parsed(messages=(message,)))
        except Exception as exc:  # recorded on the row and retried: one bad message must not stop the rest
            return exc
        return None

    def _settle(
        self, connection: Connection, items: Sequence[Row[Any]], outcomes: Sequence[BaseException | None]
    ) -> DrainReport:
        report = DrainReport(claimed=len(items))
        done = [item.id for item, outcome in zip(items, outcomes, strict=True) if outcome is None]
        if done:
            connection.execute(_DONE, {"ids": done})
        report.processed = len(done)
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome is not None:
                gave_up = self._failed(connection, item, outcome)
                report.failed += gave_up
                report.retried += not gave_up
        return report

    def _failed(self, connection: Connection, item: Row[Any], error: BaseException) -> bool:
        """Count the attempt; back off exponentially, and after max_attempts park the row as failed (kept for an
        operator) so the sender's later messages are no longer held behind it."""
        attempts = item.attempts + 1
        gave_up = attempts >= self.max_attempts
        # The exception's type only in the log: its text may quote the message or the sender's address.
        parked = "; parked as failed" if gave_up else ""
        logger.error("inbox item %s failed (%s), attempt %d%s", item.id, type(error).__name__, attempts, parked)
        backoff = timedelta(seconds=min(MAX_BACKOFF_SECONDS, 2**attempts))
        connection.execute(
            update(InboxItem)
            .where(InboxItem.id == item.id)
            .values(
                attempts=attempts,
                status="failed" if gave_up else "pending",
                available_at=self.clock() + backoff,
                last_error=f"{type(error).__name__}: {error}"[:2000],
            )
        )
        return gave_up


def as_inbound_message(item: Row[Any] | InboxItem) -> InboundMessage:
    """The message as its adapter parsed it, from a claimed inbox row (or an InboxItem)."""
    return InboundMessage(
        channel=item.channel,
        sender=item.sender,
        text=item.body,
        provider_message_id=item.provider_message_id,
        received_at=item.received_at,
        media_urls=tuple(item.media or ()),
        metadata=dict(item.details or {}),
    )


def backlog(database: Database, now: datetime) -> dict[str, float | int]:
    """Pending and failed inbox rows and the age of the oldest pending one, for /healthz and /metrics."""
    statement = select(
        func.count().filter(InboxItem.status == "pending"),
        func.count().filter(InboxItem.status == "failed"),
        func.min(InboxItem.received_at).filter(InboxItem.status == "pending"),
    )
    with database.engine.connect() as connection:
        pending, failed, oldest = connection.execute(statement).one()
    age = (now - oldest).total_seconds() if oldest else 0.0
    return {"pending": pending, "failed": failed, "oldest_pending_seconds": round(max(age, 0.0), 1)}
