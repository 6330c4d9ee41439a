"""The webhook's one read after the conversation lock: the latest open conversation on the channel and the open
invoices, oldest due first (what bot.debtors.open_invoices returns), in a single statement."""

from __future__ import annotations

from datetime import date

from sqlalchemy import update

from bot.conversations import _open_conversation_and_invoices
from bot.debtors import open_invoices
from bot.models import Conversation, Invoice

INVOICES = [
    {"number": "F-3", "amount": "30000", "due_date": date(2026, 12, 20)},
    {"number": "F-1", "amount": "10000", "due_date": date(2026, 11, 5)},
    {"number": "F-2", "amount": "20000", "due_date": date(2026, 11, 5)},
    {"number": "F-4", "amount": "40000", "due_date": date(2026, 10, 1)},
]


def test_the_latest_open_conversation_on_the_channel_and_the_open_invoices_oldest_due_first(db, make_debtor):
    debtor = make_debtor(invoices=INVOICES)
    with db.session() as session:
        newest_closed = Conversation(debtor_id=debtor.id, channel="sms", address="+56961234567", mode="closed")
        older_open = Conversation(debtor_id=debtor.id, channel="sms", address="+56961234567")
        latest_open = Conversation(debtor_id=debtor.id, channel="sms", address="+56961234567", mode="human")
        other_channel = Conversation(debtor_id=debtor.id, channel="whatsapp", address="+56961234567")
        session.add_all([older_open, latest_open, other_channel])
        session.flush()
        session.add(newest_closed)
        # Neither a paid nor a disputed invoice is still being collected.
        session.execute(update(Invoice).where(Invoice.number == "F-4").values(balance_minor=0))
        session.execute(update(Invoice).where(Invoice.number == "F-3").values(status="disputed"))
        session.commit()
        latest_open_id = latest_open.id

    with db.session() as session:
        conversation, invoices = _open_conversation_and_invoices(session, debtor.id, "sms")
        expected = open_invoices(session, debtor.id)
    assert conversation is not None and conversation.id == latest_open_id
    assert [invoice.number for invoice in invoices] == ["F-1", "F-2"]
    assert [invoice.id for invoice in invoices] == [invoice.id for invoice in expected]


def test_no_open_conversation_and_no_invoices(db, make_debtor):
    debtor = make_debtor(invoices=[])
    with db.session() as session:
        session.add(Conversation(debtor_id=debtor.id, channel="sms", address="+56961234567", mode="closed"))
        session.commit()
        assert _open_conversation_and_invoices(session, debtor.id, "sms") == (None, [])
        assert _open_conversation_and_invoices(session, debtor.id, "email") == (None, [])
