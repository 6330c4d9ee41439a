"""PublishedFlows: the latest published FlowVersion wins over the shipped file, cheaply and at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event, update

from bot.flow_store import LATEST_TTL_SECONDS, PublishedFlows, forget_published_flows
from bot.models import FlowVersion
from bot.store import Database
from flows import FLOWS_DIR
from flows.loader import default_flow

SHIPPED = (FLOWS_DIR / "collections.yaml").read_text(encoding="utf-8")
CHANGED = SHIPPED.replace("ask: verify_identity}", "ask: identity_failed}")


class Ticker:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    yield seen
    event.remove(db.engine, "before_cursor_execute", count)


def _publish(db: Database, version: int, source: str = CHANGED) -> None:
    with db.session() as session:
        session.execute(update(FlowVersion).where(FlowVersion.status == "published").values(status="archived"))
        session.add(FlowVersion(name="collections", version=version, status="published", source=source))
        session.commit()


def test_without_a_published_version_the_shipped_file_is_used(db: Database) -> None:
    with db.session() as session:
        session.add(FlowVersion(name="collections", version=2, status="draft", source=CHANGED))
        session.commit()
    assert PublishedFlows(db)("collections", 1) is default_flow("collections")


def test_the_latest_published_version_is_used_with_its_row_version(db: Database) -> None:
    _publish(db, 2)
    flow = PublishedFlows(db)("collections", 1)
    assert flow.version == 2
    assert flow.node("verify").slots[0].ask == "identity_failed"


def test_lookups_are_cached_and_refreshed_after_the_ttl(db: Database, statements: list[str]) -> None:
    ticker = Ticker()
    flows = PublishedFlows(db, monotonic=ticker)
    assert flows("collections") is default_flow("collections")
    reads = len(statements)
    for _ in range(50):
        flows("collections")
    assert len(statements) == reads  # no query per turn within the TTL

    _publish(db, 2)
    statements.clear()
    assert flows("collections") is default_flow("collections")  # another process published: not seen yet
    ticker.now += LATEST_TTL_SECONDS + 0.1
    with db.session() as session:
        flows.refresh(session, "collections")
    assert flows("collections").version == 2
    assert len(statements) == 2  # the latest id, then the new row once (it is parsed once and kept)


def test_a_publish_in_this_process_is_seen_at_once(db: Database) -> None:
    flows = PublishedFlows(db, monotonic=Ticker())
    with db.session() as session:
        assert flows.refresh(session, "collections") is None
    _publish(db, 2)
    forget_published_flows()
    with db.session() as session:
        flows.refresh(session, "collections")
    assert flows("collections").version == 2


def test_refresh_uses_the_callers_transaction_so_sqlite_never_waits_on_itself(db: Database) -> None:
    _publish(db, 2)
    flows = PublishedFlows(db)
    with db.unit_of_work() as uow:  # on SQLite this holds the write lock (BEGIN IMMEDIATE)
        uow.session.add(FlowVersion(name="other", version=1, status="draft", source="x"))
        uow.session.flush()
        flows.refresh(uow.session, "collections")
        assert flows("collections").version == 2  # from the cache: no second connection


def test_a_published_row_broken_by_hand_falls_back_to_the_shipped_flow(db: Database) -> None:
    _publish(db, 2, source="name: [broken")
    assert PublishedFlows(db)("collections") is default_flow("collections")
