"""The webhook's statements: one read after the conversation lock (the latest open conversation on the channel and
the open invoices, oldest due first, as bot.debtors.open_invoices returns them), and the replies with their outbox
rows in two INSERTs."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import event, select, update

from bot.conversations import _open_conversation_and_invoices, insert_replies
from bot.debtors import open_invoices
from bot.models import Conversation, Invoice, Message, Outbox

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


def test_replies_are_stored_in_order_with_their_outbox_rows_in_two_statements(db, make_debtor):
    debtor = make_debtor()
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    statements: list[str] = []
    with db.session() as session:
        conversation = Conversation(debtor_id=debtor.id, channel="sms", address="+56961234567")
        session.add(conversation)
        session.flush()
        rows = [
            {"conversation_id": conversation.id, "debtor_id": debtor.id, "direction": "out", "channel": "sms",
             "body": f"reply {n}", "media": [], "template_key": f"key_{n}", "knowledge_source": None,
             "delivery_status": "queued", "created_at": now}
            for n in range(3)
        ]  # fmt: skip

        def note(_connection: object, _cursor: object, sql: str, *_args: object) -> None:
            statements.append(sql)

        event.listen(db.engine, "before_cursor_execute", note)
        try:
            ids = insert_replies(session, rows, queue=True, now=now)
        finally:
            event.remove(db.engine, "before_cursor_execute", note)
        session.commit()
        bodies = {message.id: message.body for message in session.scalars(select(Message))}
        queued = session.scalars(select(Outbox).order_by(Outbox.message_id)).all()
    # Two round trips on PostgreSQL; SQLite (no round trips to save) inserts RETURNING rows one at a time.
    assert len(statements) == (2 if db.dialect == "postgresql" else len(rows) + 1)
    assert [bodies[message_id] for message_id in ids] == ["reply 0", "reply 1", "reply 2"]
    assert [(row.message_id, row.initiated_by, row.status) for row in queued] == [
        (message_id, "reply", "pending") for message_id in sorted(ids)
    ]


def test_replies_fall_due_at_the_turns_clock_not_the_wall_clock(db, make_debtor):
    """A simulated or test clock far from today: the outbox rows must be due when the turn says, or a dispatcher on
    the same clock never sees them (found when the wall clock passed the test clock's date)."""
    debtor = make_debtor()
    then = datetime(2031, 1, 2, 3, 4, tzinfo=UTC)
    with db.session() as session:
        conversation = Conversation(debtor_id=debtor.id, channel="sms", address="+56961234567")
        session.add(conversation)
        session.flush()
        row = {"conversation_id": conversation.id, "debtor_id": debtor.id, "direction": "out", "channel": "sms",
               "body": "reply", "media": [], "template_key": "thanks", "knowledge_source": None,
               "delivery_status": "queued", "created_at": then}  # fmt: skip
        insert_replies(session, [row], queue=True, now=then)
        session.commit()
        queued = session.scalars(select(Outbox)).one()
    assert (queued.created_at, queued.next_attempt_at) == (then, then)
