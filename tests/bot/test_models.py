"""Model constraints on the real database (SQLite and PostgreSQL): uniqueness, checks, 64-bit money,
aware UTC timestamps, the append-only audit trail and optimistic locking of conversations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm.exc import StaleDataError

from bot.models import AuditEvent, AuditTrailIsAppendOnly, Conversation, Creditor, Debtor, Invoice, Message
from bot.store import Database

SANTIAGO = ZoneInfo("America/Santiago")


@pytest.fixture
def debtor(make_debtor: Callable[..., Debtor]) -> Debtor:
    return make_debtor(invoices=[])


def save(db: Database, *rows: object) -> None:
    with db.session() as session:
        session.add_all(rows)
        session.commit()


def message(debtor: Debtor, provider_id: str | None, channel: str = "sms", **fields: object) -> Message:
    return Message(debtor_id=debtor.id, direction="in", channel=channel, provider_message_id=provider_id, **fields)


def invoice(debtor: Debtor, number: str = "F-9", **fields: object) -> Invoice:
    values = {"amount_minor": 1000, "balance_minor": 1000, "currency": "CLP", "due_date": date(2026, 12, 5)}
    return Invoice(creditor_id=debtor.creditor_id, debtor_id=debtor.id, number=number, **(values | fields))


def test_same_provider_message_id_on_one_channel_is_rejected(db: Database, debtor: Debtor) -> None:
    save(db, message(debtor, "SM123"))
    with pytest.raises(IntegrityError):
        save(db, message(debtor, "SM123"))


def test_messages_without_provider_id_and_same_id_on_other_channels_are_fine(db: Database, debtor: Debtor) -> None:
    save(db, message(debtor, None), message(debtor, None), message(debtor, "X1"), message(debtor, "X1", "telegram"))
    with db.session() as session:
        assert len(session.scalars(select(Message)).all()) == 4


def test_external_ref_is_unique_per_creditor_only(
    db: Database, debtor: Debtor, make_creditor: Callable[..., Creditor]
) -> None:
    with pytest.raises(IntegrityError):
        save(db, Debtor(creditor_id=debtor.creditor_id, external_ref=debtor.external_ref, name="Duplicado"))
    other = make_creditor(slug="otra", name="Otra")
    save(db, Debtor(creditor_id=other.id, external_ref=debtor.external_ref, name="Homónimo"))


@pytest.mark.parametrize("fields", [{"balance_minor": -1}, {"amount_minor": -1, "balance_minor": 0}])
def test_invoice_amounts_cannot_be_negative(db: Database, debtor: Debtor, fields: dict[str, int]) -> None:
    with pytest.raises(IntegrityError):
        save(db, invoice(debtor, **fields))


def test_money_columns_hold_more_than_32_bits(db: Database, debtor: Debtor) -> None:
    huge = 5 * 2**40  # e.g. a large portfolio total in CLP or minor units of a weak currency
    save(db, invoice(debtor, amount_minor=huge, balance_minor=huge - 1))
    with db.session() as session:
        stored = session.scalars(select(Invoice)).one()
        assert (stored.amount_minor, stored.balance_minor) == (huge, huge - 1)


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError):
        save(db, Message(debtor_id=999_999, direction="in", channel="sms"))


def test_naive_datetimes_are_refused(db: Database, debtor: Debtor) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        save(db, message(debtor, "N1", created_at=datetime(2026, 11, 25, 12, 0)))


def test_datetimes_come_back_aware_in_utc(db: Database, debtor: Debtor) -> None:
    local = datetime(2026, 12, 1, 9, 30, tzinfo=SANTIAGO)
    save(db, message(debtor, "T1", created_at=local))
    with db.session() as session:
        stored = session.scalars(select(Message.created_at)).one()
    assert stored == local
    assert stored.tzinfo == UTC
    assert stored.hour == 12  # 09:30 in Santiago (UTC-3 in December) is 12:30 UTC


def test_comparisons_with_datetimes_in_other_zones_use_the_instant(db: Database, debtor: Debtor) -> None:
    base = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    save(db, *(message(debtor, f"C{hours}", created_at=base + timedelta(hours=hours)) for hours in range(4)))
    cutoff = (base + timedelta(hours=1, minutes=30)).astimezone(SANTIAGO)  # 10:30 local, 13:30 UTC
    with db.session() as session:
        later = session.scalars(select(Message.provider_message_id).where(Message.created_at > cutoff)).all()
    assert sorted(later) == ["C2", "C3"]


@pytest.fixture
def audit_event_id(db: Database) -> int:
    event = AuditEvent(actor="api", action="debtor.created", subject_type="debtor", subject_id="1")
    save(db, event)
    return event.id


def test_audit_event_cannot_be_updated_through_the_orm(db: Database, audit_event_id: int) -> None:
    with db.session() as session:
        session.get_one(AuditEvent, audit_event_id).action = "debtor.deleted"
        with pytest.raises(AuditTrailIsAppendOnly):
            session.commit()


def test_audit_event_cannot_be_deleted_through_the_orm(db: Database, audit_event_id: int) -> None:
    with db.session() as session:
        session.delete(session.get_one(AuditEvent, audit_event_id))
        with pytest.raises(AuditTrailIsAppendOnly):
            session.commit()


def test_audit_events_cannot_be_bulk_updated_or_deleted_through_the_orm(db: Database, audit_event_id: int) -> None:
    with db.session() as session:
        with pytest.raises(AuditTrailIsAppendOnly):
            session.execute(update(AuditEvent).values(actor="someone-else"))
        with pytest.raises(AuditTrailIsAppendOnly):
            session.execute(delete(AuditEvent).where(AuditEvent.id == audit_event_id))
    with db.session() as session:
        assert session.get_one(AuditEvent, audit_event_id).actor == "api"


@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement", ["UPDATE audit_events SET action = 'forged'", "DELETE FROM audit_events WHERE id > 0"]
)
def test_raw_sql_cannot_change_audit_events_on_postgres(db: Database, audit_event_id: int, statement: str) -> None:
    if db.dialect != "postgresql":
        pytest.skip("the append-only trigger exists on PostgreSQL only")
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:
        connection.execute(text(statement))
    with db.session() as session:
        assert session.get_one(AuditEvent, audit_event_id).action == "debtor.created"


def test_stale_conversation_write_raises_instead_of_overwriting(db: Database, debtor: Debtor) -> None:
    conversation = Conversation(debtor_id=debtor.id, channel="sms", address="+56961234567")
    save(db, conversation)
    with db.session() as first, db.session() as second:
        # Both load version 1; each ends its read transaction at once, since on SQLite every
        # transaction holds the single writer lock (BEGIN IMMEDIATE) until it ends.
        mine = first.get_one(Conversation, conversation.id)
        first.commit()
        theirs = second.get_one(Conversation, conversation.id)
        second.commit()
        mine.node = "offer_plan"
        first.commit()
        theirs.node = "promise"
        with pytest.raises(StaleDataError):
            second.commit()
    with db.session() as session:
        stored = session.get_one(Conversation, conversation.id)
        assert (stored.node, stored.version) == ("offer_plan", 2)
