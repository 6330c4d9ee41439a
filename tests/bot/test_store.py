"""The store: unit of work, conversation locks (in-process and real Redis), and the inbound path under
concurrency on the real test database."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from bot.conversations import Received
from bot.domain import InboundMessage
from bot.models import Conversation, Creditor, Debtor, Message
from bot.services import Services
from bot.store import ConversationLocks, Database, LocalLocks, RedisLocks, make_locks

LocksFactory = Callable[[], ConversationLocks]
T = TypeVar("T")


@pytest.fixture(params=["local", "redis"])
def new_locks(request: pytest.FixtureRequest) -> Iterator[LocksFactory]:
    """Lock handles as separate workers see them: threads share one LocalLocks; with Redis each
    call stands for another process, with its own connection."""
    if request.param == "local":
        shared = LocalLocks()
        yield lambda: shared
        return
    url = request.getfixturevalue("redis_url")
    clients: list[redis.Redis] = []

    def make() -> ConversationLocks:
        clients.append(redis.Redis.from_url(url))
        return RedisLocks(clients[-1])

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def key() -> str:
    # Unique per test: the Redis server may be shared with other runs.
    return f"test:{uuid.uuid4().hex}"


def run_in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Start `count` calls together (a barrier) and return their results; any exception fails the test."""
    barrier = threading.Barrier(count)

    def start(index: int) -> T:
        barrier.wait(timeout=10)
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return [future.result(timeout=60) for future in [pool.submit(start, index) for index in range(count)]]


# --- locks -------------------------------------------------------------------------------------------


def test_same_key_is_held_by_one_worker_at_a_time(new_locks: LocksFactory, key: str) -> None:
    inside, most_inside, total = 0, 0, 0
    counter = threading.Lock()

    def work(_index: int) -> None:
        nonlocal inside, most_inside, total
        with new_locks().hold(key, timeout=20):
            with counter:
                inside += 1
                most_inside = max(most_inside, inside)
            seen = total
            time.sleep(0.005)  # widen the window a missing lock would let another worker into
            total = seen + 1
            with counter:
                inside -= 1

    run_in_threads(8, work)
    assert (most_inside, total) == (1, 8)


def test_waiting_for_a_held_key_times_out(new_locks: LocksFactory, key: str) -> None:
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with new_locks().hold(key):
            held.set()
            done.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(TimeoutError), new_locks().hold(key, timeout=0.2):
            pass
    finally:
        done.set()
        thread.join()
    with new_locks().hold(key, timeout=1):
        pass


def test_different_keys_do_not_wait_for_each_other(new_locks: LocksFactory, key: str) -> None:
    barrier = threading.Barrier(4)

    def work(index: int) -> None:
        with new_locks().hold(f"{key}:{index}", timeout=5):
            barrier.wait(timeout=5)  # breaks unless all four hold their keys at the same time

    run_in_threads(4, work)


def test_local_locks_forget_keys_once_released() -> None:
    locks = LocalLocks()
    run_in_threads(6, lambda index: _hold_briefly(locks, f"conversation:{index % 2}"))
    with locks.hold("held"), pytest.raises(TimeoutError), locks.hold("held", timeout=0.05):
        pass
    assert locks._locks == {}  # memory stays flat however many conversations pass through, even after timeouts


def _hold_briefly(locks: LocalLocks, key: str) -> None:
    with locks.hold(key):
        time.sleep(0.002)


def test_redis_lock_leaves_no_key_behind(redis_client: redis.Redis, key: str) -> None:
    locks = RedisLocks(redis_client)
    with locks.hold(key):
        assert redis_client.exists(f"cobrabot:lock:{key}") == 1
    assert redis_client.exists(f"cobrabot:lock:{key}") == 0


def test_redis_lock_of_a_crashed_holder_expires_with_its_lease(redis_client: redis.Redis, key: str) -> None:
    # A worker that died while holding the lock never releases it; only the lease frees the conversation.
    assert redis_client.lock(f"cobrabot:lock:{key}", timeout=0.3).acquire()
    started = time.monotonic()
    with RedisLocks(redis_client).hold(key, timeout=5):
        waited = time.monotonic() - started
    assert 0.1 < waited < 3


def test_make_locks_picks_redis_only_when_configured(redis_url: str, key: str) -> None:
    assert isinstance(make_locks(None), LocalLocks)
    locks = make_locks(redis_url)
    assert isinstance(locks, RedisLocks)
    with locks.hold(key, timeout=1):
        pass


# --- unit of work ------------------------------------------------------------------------------------


def creditor_slugs(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(Creditor.slug)))


def test_unit_of_work_rolls_back_what_was_not_committed(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.add(Creditor(slug="flushed-only", name="X"))
        uow.session.flush()
    assert creditor_slugs(db) == []


def test_unit_of_work_keeps_what_was_committed(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.add(Creditor(slug="kept", name="X"))
        uow.commit()
        uow.add(Creditor(slug="after-commit", name="Y"))
    assert creditor_slugs(db) == ["kept"]


def test_unit_of_work_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError), db.unit_of_work() as uow:
        uow.add(Creditor(slug="failed", name="X"))
        uow.session.flush()
        raise RuntimeError("boom")
    assert creditor_slugs(db) == []


@pytest.fixture
def conversation_id(db: Database, make_debtor: Callable[..., Debtor]) -> int:
    debtor = make_debtor()
    with db.session() as session:
        conversation = Conversation(debtor_id=debtor.id, channel="sms", address="+56961234567")
        session.add(conversation)
        session.commit()
        return conversation.id


def test_lock_conversation_reloads_state_written_by_someone_else(db: Database, conversation_id: int) -> None:
    with db.unit_of_work() as uow:
        stale = uow.session.get_one(Conversation, conversation_id)
        uow.commit()
        with db.session() as other:
            other.get_one(Conversation, conversation_id).node = "offer_plan"
            other.commit()
        assert uow.lock_conversation(conversation_id) is stale
        assert (stale.node, stale.version) == ("offer_plan", 2)


def test_lock_conversation_excludes_other_writers(db: Database, conversation_id: int) -> None:
    with db.unit_of_work() as uow:
        uow.lock_conversation(conversation_id)
        if db.dialect == "postgresql":
            _assert_row_locked(db, conversation_id)
        else:
            _assert_sqlite_write_locked(db)


def _assert_row_locked(db: Database, conversation_id: int) -> None:
    engine = create_engine(db.url)
    try:
        with pytest.raises(OperationalError), engine.connect() as connection:
            connection.execute(
                text("SELECT id FROM conversations WHERE id = :id FOR UPDATE NOWAIT"), {"id": conversation_id}
            )
    finally:
        engine.dispose()


def _assert_sqlite_write_locked(db: Database) -> None:
    path = db.url.split(":///", 1)[1]
    connection = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            connection.execute("BEGIN IMMEDIATE")
    finally:
        connection.close()


def test_database_creates_the_sqlite_directory_and_answers_ping(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'cobrabot.db'}")
    try:
        database.ping()
    finally:
        database.dispose()
    assert (tmp_path / "nested" / "dir" / "cobrabot.db").exists()


# --- the inbound path under concurrency --------------------------------------------------------------


class TickingClock:
    """A thread-safe clock that moves one second per reading, so every turn really changes the state."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._guard = threading.Lock()

    def __call__(self) -> datetime:
        with self._guard:
            self._now += timedelta(seconds=1)
            return self._now


@pytest.fixture(params=["local-locks", "redis-locks"])
def chat(request: pytest.FixtureRequest, services: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    """Services whose conversation locks are in-process, or in the real Redis (as several workers would)."""
    clock = TickingClock(services.clock())
    monkeypatch.setattr(services, "clock", clock)
    monkeypatch.setattr(services.conversations, "clock", clock)
    if request.param == "redis-locks":
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        request.addfinalizer(client.close)
        monkeypatch.setattr(services.conversations, "locks", RedisLocks(client))
    return services


def send(services: Services, debtor_id: int, text_: str, provider_id: str | None = None) -> Received:
    message = InboundMessage(
        channel="webchat",
        sender=f"portal:{debtor_id}",
        text=text_,
        provider_message_id=provider_id,
        received_at=services.clock(),
    )
    return services.conversations.receive(message, debtor_id, verified=True)


def stored(session: Session, debtor_id: int, direction: str) -> int:
    query = select(func.count()).where(Message.debtor_id == debtor_id, Message.direction == direction)
    return session.scalar(query) or 0


def test_ten_messages_at_once_for_one_debtor_are_all_handled(
    chat: Services, db: Database, make_creditor: Callable[..., Creditor], make_debtor: Callable[..., Debtor]
) -> None:
    creditor = make_creditor()
    racing = make_debtor(creditor=creditor)
    calm = make_debtor(  # the same facts as the racing debtor, so the same turns reach the same version
        creditor=creditor,
        external_ref="C-2002",
        phone="+56 9 6123 4568",
        invoices=[{"number": "F-2", "amount": "45990", "due_date": date(2026, 12, 5)}],
    )
    results = run_in_threads(10, lambda _index: send(chat, racing.id, "hola"))  # same text: order-free
    for _ in range(10):
        send(chat, calm.id, "hola")  # the same turns one by one: the version they must reach
    assert all(not result.duplicate and result.replies for result in results)
    with db.session() as session:
        assert stored(session, racing.id, "in") == 10
        assert stored(session, racing.id, "out") == sum(len(result.replies) for result in results)
        [conversation] = session.scalars(select(Conversation).where(Conversation.debtor_id == racing.id)).all()
        baseline = session.scalars(select(Conversation).where(Conversation.debtor_id == calm.id)).one()
        # At least one version per turn (a turn that writes more, e.g. a debtor's first, bumps it more): no lost
        # update; and the racing conversation ends where the one-by-one conversation does.
        assert conversation.version > 10 and baseline.version > 10
        assert (conversation.node, conversation.mode) == (baseline.node, baseline.mode)
        assert {k: v for k, v in conversation.slots.items() if k != "_at"} == {
            k: v for k, v in baseline.slots.items() if k != "_at"
        }


def test_one_provider_message_id_sent_by_five_threads_is_handled_once(
    chat: Services, db: Database, make_debtor: Callable[..., Debtor]
) -> None:
    debtor = make_debtor()
    results = run_in_threads(5, lambda _index: send(chat, debtor.id, "hola", provider_id=f"{debtor.id}:abc"))
    [first] = [result for result in results if not result.duplicate]
    assert all(result.replies == () for result in results if result is not first)
    with db.session() as session:
        assert stored(session, debtor.id, "in") == 1
        assert stored(session, debtor.id, "out") == len(first.replies) > 0
