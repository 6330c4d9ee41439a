"""Planned reminders are queued without words; the dispatcher writes them as it sends, with the balances of
that moment, and drops a reminder whose debts were all settled in between."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, update

from bot.campaigns import plan_reminders
from bot.dispatch import NOTHING_OWED, Dispatcher
from bot.models import AuditEvent, Invoice, Message, Outbox
from bot.ports import ChannelRegistry
from tests.bot.test_dispatch import CollectingChannel
from tests.bot.web.test_api import DEBTOR

DEBTS = [
    {"number": "F-1", "amount": "10000", "due_date": date(2026, 11, 10)},
    {"number": "F-2", "amount": "20000", "due_date": date(2026, 11, 18)},
]


@pytest.fixture
def sms():
    return CollectingChannel("sms")


@pytest.fixture
def dispatcher(services, sms):
    registry = ChannelRegistry()
    registry.register(sms)
    return Dispatcher(services.database, registry, services.clock, whatsapp_templates={}, rates={})


def plan(db, now: datetime) -> None:
    with db.session() as session:
        plan_reminders(session, now)
        session.commit()


def settle(db, number: str, balance_minor: int, status: str = "open") -> None:
    with db.session() as session:
        session.execute(
            update(Invoice).where(Invoice.number == number).values(balance_minor=balance_minor, status=status)
        )
        session.commit()


def test_the_words_are_written_at_sending_with_the_balance_of_that_moment(db, services, dispatcher, sms, make_debtor):
    make_debtor(invoices=DEBTS, channel_preference=["sms"])
    plan(db, services.clock())
    with db.session() as session:
        assert session.scalars(select(Message.body)).one() == ""  # queued: no words yet
    settle(db, "F-2", 5000)  # a part payment between planning and sending
    services.clock.advance(days=2)
    assert dispatcher.run_once().sent == 1
    [sent] = sms.sent
    assert "tiene 2 documentos vencidos por $15.000" in sent.text and "10 de noviembre de 2026" in sent.text
    with db.session() as session:
        assert session.scalars(select(Message.body)).one() == sent.text  # the timeline shows what was sent


def test_a_debt_paid_before_sending_drops_out_of_the_message(db, services, dispatcher, sms, make_debtor):
    make_debtor(invoices=DEBTS, channel_preference=["sms"])
    plan(db, services.clock())
    settle(db, "F-1", 0, "paid")
    assert dispatcher.run_once().sent == 1
    [sent] = sms.sent
    assert "tiene un documento vencido por $20.000" in sent.text and "desde el 18 de noviembre" in sent.text


def test_a_reminder_whose_debts_were_all_settled_is_cancelled_not_sent(db, services, dispatcher, sms, make_debtor):
    make_debtor(invoices=DEBTS, channel_preference=["sms"])
    plan(db, services.clock())
    settle(db, "F-1", 0, "paid")
    settle(db, "F-2", 20000, "written_off")
    report = dispatcher.run_once()
    assert (report.sent, report.blocked, sms.sent) == (0, 1, [])
    with db.session() as session:
        row = session.scalars(select(Outbox)).one()
        assert (row.status, row.decision_reason, row.message.delivery_status) == (
            "cancelled",
            NOTHING_OWED,
            "cancelled",
        )
        assert session.scalars(select(AuditEvent.action).where(AuditEvent.action == "message.blocked")).all()


def test_a_message_written_when_queued_is_sent_as_it_is(db, services, dispatcher, sms, make_debtor):
    debtor = make_debtor()
    with db.session() as session:
        message = Message(debtor_id=debtor.id, direction="out", channel="sms", body="", template_key="greeting",
                          delivery_status="queued", created_at=datetime(2026, 11, 25, tzinfo=UTC))  # fmt: skip
        session.add(message)
        session.flush()
        session.add(
            Outbox(message_id=message.id, channel="sms", initiated_by="reply", next_attempt_at=message.created_at)
        )
        session.commit()
    assert dispatcher.run_once().sent == 1
    assert sms.sent[0].text == ""  # not a planned reminder: nothing to render, nothing cancelled


def test_the_timeline_shows_the_words_as_they_would_go_out_then_as_they_went(
    db, services, dispatcher, sms, make_debtor, client, api_headers
):
    make_debtor(invoices=DEBTS, channel_preference=["sms"])
    plan(db, services.clock())

    def timeline_text() -> str:
        timeline = client.get(DEBTOR, headers=api_headers).get_json()["timeline"]
        [message] = [item for item in timeline if item["type"] == "message"]
        return message["text"]

    assert "tiene 2 documentos vencidos por $30.000" in timeline_text()  # a preview as of now
    settle(db, "F-1", 0, "paid")
    assert "tiene un documento vencido por $20.000" in timeline_text()
    dispatcher.run_once()
    settle(db, "F-2", 0, "paid")
    assert timeline_text() == sms.sent[0].text  # once sent: what went out, whatever was paid since
