"""Planning at scale: keyset pages that never split a debtor, a fixed number of statements per page however many
debtors it holds, one creditor at a time for the Celery fan-out, and web chat as a reminder channel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

from sqlalchemy import delete, event, select

from bot.campaigns import PlanReport, plan_reminders
from bot.models import ConsentOptOut, Conversation, Creditor, Debtor, Message, Outbox, ScheduledReminder
from bot.store import Database

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 12:00 in Santiago: steps due at 10:00 today have come


def debts(n: int, *due: date) -> list[dict[str, object]]:
    return [{"number": f"F-{n}-{k}", "amount": "45990", "due_date": day} for k, day in enumerate(due)]


def add_debtors(make_debtor: Callable[..., Debtor], creditor: Creditor, count: int, **fields: object) -> list[int]:
    made = [
        make_debtor(creditor, external_ref=f"S-{creditor.slug}-{n}", phone=f"+56 9 6000 {n:04d}",
                    invoices=debts(n, date(2026, 11, 22), date(2026, 11, 10)), **fields)
        for n in range(count)
    ]  # fmt: skip
    return [debtor.id for debtor in made]


def plan(db: Database, **options: object) -> PlanReport:
    with db.session() as session:
        report = plan_reminders(session, NOW, **options)  # type: ignore[arg-type]
        session.commit()
        return report


def messages_per_debtor(db: Database) -> dict[int, int]:
    with db.session() as session:
        rows = session.execute(select(Message.debtor_id).join(Outbox, Outbox.message_id == Message.id)).scalars()
        counts: dict[int, int] = {}
        for debtor_id in rows:
            counts[debtor_id] = counts.get(debtor_id, 0) + 1
        return counts


def test_pages_of_two_debtors_plan_the_same_as_one_page_and_never_split_a_debtor(db, make_creditor, make_debtor):
    ids = add_debtors(make_debtor, make_creditor(), 7)
    report = plan(db, batch_size=2)
    # Each debtor has two debts with due steps (od3 and od15): two reminder rows, one message.
    assert (report.planned, report.queued, report.messages) == (14, 14, 7)
    assert messages_per_debtor(db) == {debtor_id: 1 for debtor_id in ids}
    assert plan(db, batch_size=2).planned == 0  # nothing twice


def test_statements_per_page_do_not_grow_with_the_debtors_in_it(db, make_creditor, make_debtor):
    plan(db)  # warm: the template overrides are read once and then cached for a few seconds
    add_debtors(make_debtor, make_creditor(), 3)

    def statements() -> int:
        seen: list[str] = []
        listener = lambda *args: seen.append(args[2])  # noqa: E731
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            plan(db, batch_size=1000)
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        return len(seen)

    few = statements()
    with db.session() as session:  # a clean slate, then four times the debtors (with opt-outs) on one page
        for table in (ScheduledReminder, Outbox, Message):
            session.execute(delete(table))
        session.commit()
    ids = add_debtors(make_debtor, make_creditor(slug="otra", name="Otra"), 9)
    with db.session() as session:
        session.add(ConsentOptOut(debtor_id=ids[0], channel="email", source="api", created_at=NOW))
        session.commit()
    assert statements() == few


def test_a_creditor_s_run_plans_only_its_own_debtors(db, make_creditor, make_debtor):
    mine = add_debtors(make_debtor, make_creditor(), 2)
    other_creditor = make_creditor(slug="otra", name="Otra")
    others = add_debtors(make_debtor, other_creditor, 3)
    with db.session() as session:
        creditor_id = session.scalar(select(Debtor.creditor_id).where(Debtor.id == mine[0]))
    assert plan(db, creditor_id=creditor_id).messages == 2
    assert set(messages_per_debtor(db)) == set(mine)
    assert plan(db).messages == 3
    assert set(messages_per_debtor(db)) == set(mine) | set(others)


def test_a_debtor_with_an_open_portal_chat_gets_the_reminder_in_that_chat(db, make_creditor, make_debtor):
    creditor = make_creditor()
    chatting, silent = add_debtors(make_debtor, creditor, 2, channel_preference=["webchat"])
    with db.session() as session:
        chat = Conversation(debtor_id=chatting, channel="webchat", address=f"portal:{chatting}")
        session.add(chat)
        session.commit()
        chat_id = chat.id
    report = plan(db)
    assert (report.messages, report.skipped) == (1, 2)  # the other has no chat open: nowhere to send
    with db.session() as session:
        message = session.scalars(select(Message)).one()
        skipped = session.scalars(select(ScheduledReminder.debtor_id).where(ScheduledReminder.status == "skipped"))
        assert set(skipped) == {silent}
    assert (message.debtor_id, message.channel, message.conversation_id) == (chatting, "webchat", chat_id)
    assert message.body == ""  # written by the dispatcher as it sends (tests/bot/test_demo.py reads it in the chat)
