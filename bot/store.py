"""Database access: engine set-up, the unit of work and per-conversation locking."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from bot.models import Conversation

logger = logging.getLogger(__name__)
T = TypeVar("T")
# A pooled connection idle this long is pinged before use (a server restart or failover may have dropped it);
# one handed back moments ago is not: under load that ping was a round trip on every webhook.
IDLE_PING_SECONDS = 10.0


class Database:
    """One engine and session factory per process; SQLite and PostgreSQL behave the same to callers."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = url
        self.engine = _make_engine(url, echo=echo, pool_size=pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self.sessions()

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str, *, echo: bool, pool_size: int) -> Engine:
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size)
    event.listen(engine.pool, "checkin", _note_checkin)
    event.listen(engine.pool, "checkout", _ping_if_idle)
    return engine


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """pool_pre_ping for connections idle over IDLE_PING_SECONDS only. A connection that died while busy is
    caught by its first statement: the pool then drops every older connection, and UnitOfWork.first_read
    repeats that statement on a fresh one."""
    idle_since = record.info.get("checked_in_at")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        # The ping opened a transaction; end it, so the connection is handed out idle as always (a caller that
        # switches it to autocommit, the inbox's accept, cannot do that inside a transaction).
        dbapi_connection.rollback()
    except Exception as exc:
        # The pool discards this connection and checks out another (SQLAlchemy's pessimistic-disconnect recipe).
        raise DisconnectionError(f"idle pooled connection is dead: {type(exc).__name__}") from exc


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide when transactions begin (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock when the transaction starts, so a read-then-write unit of work can never
    # fail half-way with "database is locked"; SQLite then serialises writers like row locks would.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class UnitOfWork:
    """`with db.unit_of_work() as uow:` ... `uow.commit()`; anything not committed is rolled back."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.session: Session = database.session()

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rollback()
        self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()

    def add(self, obj: object) -> None:
        self.session.add(obj)

    def first_read(self, read: Callable[[Session], T]) -> T:
        """The unit of work's first statement, run once more on a fresh connection when the pooled one is dead.

        Nothing has happened in the transaction yet, so repeating it is safe; a connection lost later (mid-write)
        still fails the unit of work, and everything in it rolls back.
        """
        try:
            return read(self.session)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            logger.warning("database connection lost before the first statement; retrying on a fresh one")
            self.session.rollback()
            return read(self.session)

    def lock_conversation(self, conversation_id: int) -> Conversation:
        """Load a conversation for update: a row lock on PostgreSQL; SQLite's write lock already holds."""
        statement = select(Conversation).where(Conversation.id == conversation_id)
        if self.database.dialect == "postgresql":
            statement = statement.with_for_update()
        conversation = self.session.scalars(statement.execution_options(populate_existing=True)).one()
        return conversation


class ConversationLocks(Protocol):
    """Serialises work on one conversation across threads (and, with Redis, across processes)."""

    def hold(self, key: str, timeout: float = 30.0) -> contextlib.AbstractContextManager[None]: ...


class LocalLocks:
    """In-process keyed locks for the embedded deployment (one process, many threads)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float = 30.0) -> Iterator[None]:
        lock = self._acquire_entry(key)
        try:
            if not lock.acquire(timeout=timeout):
                raise TimeoutError(f"lock {key} not acquired in {timeout}s")
            try:
                yield
            finally:
                lock.release()
        finally:
            self._release_entry(key)

    def _acquire_entry(self, key: str) -> threading.Lock:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
            return lock

    def _release_entry(self, key: str) -> None:
        # Forget locks nobody waits on, so memory stays flat across millions of conversations.
        with self._guard:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class RedisLocks:
    """Cluster-wide locks with a lease, so a crashed holder cannot block a conversation forever.

    The key is always held in-process first, so this process's threads stay serialised even while Redis is
    unreachable; then Redis serialises processes. When Redis is down the lock degrades to in-process only (and
    says so once in the log) instead of failing the webhook: one process stays correct, and the database row
    lock (PostgreSQL) or write lock (SQLite) still guards the conversation's state across processes.
    """

    def __init__(self, client: Any, lease_seconds: float = 30.0) -> None:
        self.client = client
        self.lease_seconds = lease_seconds
        self.local = LocalLocks()
        self.redis_down = False

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float = 30.0) -> Iterator[None]:
        started = time.monotonic()
        with self.local.hold(key, timeout):
            remaining = max(timeout - (time.monotonic() - started), 0.0)
            lock = self._acquire(key, remaining)
            try:
                yield
            finally:
                if lock is not None:
                    with contextlib.suppress(Exception):
                        lock.release()

    def _acquire(self, key: str, timeout: float) -> Any:
        """The Redis lock, or None when Redis is unreachable (degraded: the in-process lock alone holds)."""
        import redis

        lock = self.client.lock(f"cobrabot:lock:{key}", timeout=self.lease_seconds, blocking_timeout=timeout)
        try:
            acquired = lock.acquire()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._mark_down(exc)
            return None
        if not acquired:
            raise TimeoutError(f"lock {key} not acquired in {timeout}s")
        if self.redis_down:
            self.redis_down = False
            logger.warning("redis reachable again: conversation locks are cluster-wide again")
        return lock

    def _mark_down(self, exc: Exception) -> None:
        if not self.redis_down:
            logger.warning("redis unreachable (%s): conversation locks degrade to in-process", type(exc).__name__)
        self.redis_down = True


def redis_client(redis_url: str) -> Any:
    """A client that fails fast: an unreachable Redis must cost a request milliseconds, not a hang."""
    import redis

    return redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2)


def make_locks(redis_url: str | None) -> ConversationLocks:
    if not redis_url:
        return LocalLocks()
    return RedisLocks(redis_client(redis_url))
