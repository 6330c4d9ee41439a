"""Promises after they are made: reminder the day before, kept on payment, broken after the date."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import func, select

from bot.commands import RecordPromise
from bot.domain import Money
from bot.effects import Effects
from bot.models import ConsentOptOut, Conversation, Debtor, Message, Outbox, Payment, PromiseToPay
from bot.portal import PortalTokens
from bot.promises import remind_promises, resolve_promises


def promise(db, debtor, amount_minor=50_000, on=date(2026, 11, 27), made=datetime(2026, 11, 25, 15, tzinfo=UTC)):
    with db.session() as session:
        row = PromiseToPay(
            debtor_id=debtor.id,
            invoice_id=debtor.invoices[0].id,
            amount_minor=amount_minor,
            currency="CLP",
            promised_date=on,
            created_at=made,
        )
        session.add(row)
        session.commit()
        return row.id


def queued_templates(db):
    with db.session() as session:
        rows = session.execute(
            select(Message.template_key, Outbox.initiated_by).join(Outbox, Outbox.message_id == Message.id)
        )
        return sorted(rows)


def test_reminder_goes_out_once_on_the_local_day_before(db, make_debtor):
    debtor = make_debtor(channel_preference=["sms"])
    promise(db, debtor)
    with db.session() as session:
        # 2026-11-26 02:00 UTC is still the 25th in Santiago: too early.
        assert remind_promises(session, datetime(2026, 11, 26, 2, tzinfo=UTC)).reminded == 0
        assert remind_promises(session, datetime(2026, 11, 26, 13, tzinfo=UTC)).reminded == 1
        assert remind_promises(session, datetime(2026, 11, 26, 18, tzinfo=UTC)).reminded == 0
        session.commit()
    assert queued_templates(db) == [("promise_reminder", "bot")]
    with db.session() as session:
        body = session.scalars(select(Message.body)).one()
    assert "$50.000" in body and "27 de noviembre" in body


def test_no_reminder_to_a_debtor_who_opted_out(db, make_debtor):
    debtor = make_debtor(channel_preference=["sms"])
    promise(db, debtor)
    with db.session() as session:
        session.add(ConsentOptOut(debtor_id=debtor.id, channel="all", source="debtor"))
        remind_promises(session, datetime(2026, 11, 26, 13, tzinfo=UTC))
        session.commit()
    assert queued_templates(db) == []


def test_payment_after_the_promise_keeps_it(db, make_debtor):
    debtor = make_debtor()
    promise_id = promise(db, debtor)
    with db.session() as session:
        session.add(
            Payment(
                creditor_id=debtor.creditor_id,
                debtor_id=debtor.id,
                provider="api",
                provider_payment_id="p1",
                amount_minor=50_000,
                currency="CLP",
                received_at=datetime(2026, 11, 26, 12, tzinfo=UTC),
            )
        )
        run = resolve_promises(session, datetime(2026, 11, 26, 13, tzinfo=UTC))
        session.commit()
        assert run.kept == 1 and session.get(PromiseToPay, promise_id).status == "kept"


def test_unpaid_promise_breaks_after_its_local_date_and_gets_a_follow_up(db, make_debtor):
    debtor = make_debtor(channel_preference=["sms"])
    promise_id = promise(db, debtor)
    with db.session() as session:
        # 28 Nov 02:00 UTC is still the 27th in Santiago: the debtor still has the evening.
        assert resolve_promises(session, datetime(2026, 11, 28, 2, tzinfo=UTC)).broken == 0
        assert resolve_promises(session, datetime(2026, 11, 28, 12, tzinfo=UTC)).broken == 1
        session.commit()
        assert session.get(PromiseToPay, promise_id).status == "broken"
        assert session.scalar(select(func.count()).select_from(Outbox)) == 1
    assert queued_templates(db) == [("promise_broken_followup", "bot")]


def test_a_payment_made_before_the_promise_does_not_count(db, make_debtor):
    debtor = make_debtor()
    promise(db, debtor)
    with db.session() as session:
        session.add(
            Payment(
                creditor_id=debtor.creditor_id,
                debtor_id=debtor.id,
                provider="api",
                provider_payment_id="p0",
                amount_minor=50_000,
                currency="CLP",
                received_at=datetime(2026, 11, 20, tzinfo=UTC),
            )
        )
        assert resolve_promises(session, datetime(2026, 11, 28, 12, tzinfo=UTC)).broken == 1


def test_a_partly_refunded_payment_counts_only_what_was_kept(db, make_debtor):
    debtor = make_debtor()
    promise_id = promise(db, debtor)
    with db.session() as session:
        session.add(
            Payment(
                creditor_id=debtor.creditor_id,
                debtor_id=debtor.id,
                provider="stripe",
                provider_payment_id="p-refunded",
                amount_minor=50_000,
                refunded_minor=20_000,  # the provider gave 20,000 back: 30,000 < the 50,000 promised
                currency="CLP",
                received_at=datetime(2026, 11, 26, 12, tzinfo=UTC),
            )
        )
        run = resolve_promises(session, datetime(2026, 11, 26, 13, tzinfo=UTC))
        session.commit()
        assert run.kept == 0 and session.get(PromiseToPay, promise_id).status == "pending"


def test_a_promise_recorded_in_a_turn_is_dated_by_the_turns_clock(db, make_debtor):
    """A payment counts toward a promise only if received after it was made, both on the injected clock; a
    promise dated by the wall clock instead would ignore payments in any test or simulation away from today."""
    debtor = make_debtor()
    turn_time = datetime(2031, 1, 2, 3, 4, tzinfo=UTC)
    with db.session() as session:
        conversation = Conversation(debtor_id=debtor.id, channel="sms", address="+56961234567")
        session.add(conversation)
        session.flush()
        effects = Effects(
            session, conversation, session.get(Debtor, debtor.id), turn_time, PortalTokens("k", "http://x")
        )
        effects.apply(RecordPromise(Money(45990, "CLP"), date(2031, 1, 9)))
        session.commit()
        assert session.scalars(select(PromiseToPay.created_at)).one() == turn_time
