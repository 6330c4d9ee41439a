"""`cobrabot serve --demo`: on a fresh database the demo data plus one run of the scheduler's jobs put cadence
reminders into the demo debtors' portal chats, where the portal page and the console timeline read them."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import select

from bot.compliance import holiday_dates
from bot.config import load_settings
from bot.demo import prepare_demo
from bot.jobs import run_job
from bot.models import Conversation, Debtor, Message, Outbox, ScheduledReminder
from bot.services import bootstrap
from bot.store import Database
from channels import build_registry
from tests.conftest import TEST_SECRET, FixedClock


def first_contact_day(start: date) -> date:
    """The demo's due dates follow today's date; the first day from today on which Chile allows contact."""
    day = start
    while day.weekday() == 6 or day in holiday_dates("CL", day.year):
        day += timedelta(days=1)
    return day


def test_the_demo_s_reminders_go_out_on_their_own_into_the_portal_chat(tmp_path: Path):
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'demo.db'}", secret_key=TEST_SECRET)
    prepare_demo(settings)
    # 14:30 UTC is 10:30 or 11:30 in Santiago (inside hours, past the reminders' 10:00) and 06:30 or 07:30 in Los
    # Angeles (before 08:00: deferred), whichever side of daylight saving time today falls on (15:00 UTC was 08:00
    # in Los Angeles from March to November, so the test failed there).
    clock = FixedClock(datetime.combine(first_contact_day(datetime.now(UTC).date()), time(14, 30), UTC))
    database = Database(settings.database_url)
    services = bootstrap(settings, database=database, clock=clock, registry=build_registry(settings))
    try:
        assert run_job("plan_reminders", services)["messages"] == 3
        run_job("dispatch_outbox", services)
        with database.session() as session:
            sent = session.execute(
                select(Debtor.external_ref, Message.body, Conversation.channel, Outbox.status)
                .join(Message, Message.debtor_id == Debtor.id)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .join(Outbox, Outbox.message_id == Message.id)
                .order_by(Debtor.external_ref)
            ).all()
            reminders = session.scalars(select(ScheduledReminder.status)).all()
    finally:
        database.dispose()
    by_debtor = {ref: (body, channel, status) for ref, body, channel, status in sent}
    assert set(by_debtor) == {"CL-1001", "CL-1002", "US-2001"}
    assert all(channel == "webchat" for _, channel, _ in by_debtor.values())
    assert by_debtor["CL-1001"][2] == by_debtor["CL-1002"][2] == "sent"  # in the chat's timeline now
    assert "Aguas del Valle" in by_debtor["CL-1001"][0]
    assert by_debtor["US-2001"][2] == "pending"  # quiet hours in Los Angeles: it waits for 08:00 there
    assert reminders and set(reminders) == {"queued"}


def test_preparing_the_demo_twice_opens_one_portal_chat_per_debtor(tmp_path: Path):
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'demo.db'}", secret_key=TEST_SECRET)
    prepare_demo(settings)
    prepare_demo(settings)
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            chats = session.scalars(select(Conversation.debtor_id).where(Conversation.channel == "webchat")).all()
            debtors = session.scalars(select(Debtor.id)).all()
    finally:
        database.dispose()
    assert sorted(chats) == sorted(debtors)
