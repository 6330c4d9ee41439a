"""The inbound queue: webhooks store and answer, inbox workers run the turns once each, in order per sender."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bot.cli import main
from bot.domain import InboundMessage, Parsed, utcnow
from bot.inbox import MAX_ATTEMPTS, InboxWorker, as_inbound_message, backlog
from bot.models import Conversation, InboxItem, Message, Outbox
from bot.services import Services
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET
from tests.faults.helpers import count, message_sid, post_sms, sms_form, twilio_app, twilio_services

CALM_PHONE = "+56 9 6123 4568"


@pytest.fixture
def queued(db, clock, standin) -> Services:
    return twilio_services(db, clock, standin.url, inbound_queue=True)


@pytest.fixture
def debtor(make_debtor):
    return make_debtor()


def test_a_queued_webhook_is_stored_once_and_answered_before_any_turn(db, queued, debtor):
    app = twilio_app(queued)
    form = sms_form(debtor.phone, "hola", message_sid(1))

    assert post_sms(app, form).status_code == 200
    assert post_sms(app, form).status_code == 200  # Twilio's retry of the same MessageSid

    assert count(db, InboxItem) == 1
    assert count(db, Message) == 0  # nothing ran yet: the turn belongs to the worker


def test_the_worker_runs_the_turn_queues_the_reply_and_empties_the_inbox(db, queued, debtor):
    post_sms(twilio_app(queued), sms_form(debtor.phone, "hola", message_sid(1)))

    report = queued.inbox_worker().run_once()

    assert report.as_dict() == {"claimed": 1, "processed": 1, "retried": 0, "failed": 0}
    assert count(db, InboxItem) == 0
    assert count(db, Message, Message.direction == "in", Message.provider_message_id == message_sid(1)) == 1
    replies = count(db, Message, Message.direction == "out")
    assert replies >= 1 and count(db, Outbox) == replies


def test_a_claim_takes_one_message_per_sender_so_each_sender_keeps_its_order(db, queued, debtor):
    app = twilio_app(queued)
    for index in range(3):
        post_sms(app, sms_form(debtor.phone, "hola", message_sid(index)))
    worker = queued.inbox_worker()

    stored_in_order = []
    for _ in range(3):
        assert worker.run_once().processed == 1
        with db.session() as session:
            stored_in_order = session.scalars(
                select(Message.provider_message_id).where(Message.direction == "in").order_by(Message.id)
            ).all()
    assert stored_in_order == [message_sid(index) for index in range(3)]
    assert worker.run_once().claimed == 0


def test_a_turn_that_already_committed_is_not_run_twice_after_a_crash(db, queued, debtor):
    """The worker died after the turn's commit and before deleting the row: the next claim finds it again."""
    post_sms(twilio_app(queued), sms_form(debtor.phone, "hola", message_sid(1)))
    with db.session() as session:
        row = session.scalars(select(InboxItem)).one()
        message = as_inbound_message(row)
    queued.inbound.handle(Parsed(messages=(message,)))  # the turn the crashed worker had committed
    replies = count(db, Message, Message.direction == "out")

    assert queued.inbox_worker().run_once().processed == 1

    assert count(db, InboxItem) == 0
    assert count(db, Message, Message.direction == "in") == 1
    assert count(db, Message, Message.direction == "out") == replies  # no second answer


def test_a_failing_message_backs_off_holds_its_sender_then_is_parked(db, queued, clock, debtor, monkeypatch):
    app = twilio_app(queued)
    post_sms(app, sms_form(debtor.phone, "hola", message_sid(1)))
    post_sms(app, sms_form(debtor.phone, "gracias", message_sid(2)))
    handle = queued.inbound.handle

    def broken_first(parsed: Parsed):
        if parsed.messages[0].provider_message_id == message_sid(1):
            raise RuntimeError("engine bug")
        return handle(parsed)

    monkeypatch.setattr(queued.inbound, "handle", broken_first)
    worker = queued.inbox_worker()

    assert worker.run_once().as_dict() == {"claimed": 1, "processed": 0, "retried": 1, "failed": 0}
    assert worker.run_once().claimed == 0  # backing off, and the sender's second message waits behind it
    for _ in range(MAX_ATTEMPTS - 1):
        clock.advance(seconds=301)
        report = worker.run_once()
    assert report.failed == 1

    with db.session() as session:
        parked = session.scalars(select(InboxItem).where(InboxItem.status == "failed")).one()
    assert (parked.status, parked.attempts, parked.provider_message_id) == ("failed", MAX_ATTEMPTS, message_sid(1))
    assert parked.last_error == "RuntimeError: engine bug"
    assert worker.run_once().processed == 1  # the next message is no longer held
    assert count(db, Message, Message.provider_message_id == message_sid(2)) == 1
    assert backlog(db, clock()) == {"pending": 0, "failed": 1, "oldest_pending_seconds": 0.0}


def test_an_unknown_sender_is_dropped_from_the_inbox_without_a_reply(db, queued, debtor):
    assert post_sms(twilio_app(queued), sms_form("+56961239999", "hola", message_sid(1))).status_code == 200

    assert queued.inbox_worker().run_once().processed == 1

    assert count(db, InboxItem) == 0 and count(db, Message) == 0


def test_backlog_counts_pending_messages_and_the_oldest_age(db, queued, debtor):
    post_sms(twilio_app(queued), sms_form(debtor.phone, "hola", message_sid(1)))

    with db.session() as session:
        received_at = session.scalars(select(InboxItem.received_at)).one()

    assert backlog(db, received_at + timedelta(seconds=42)) == {
        "pending": 1,
        "failed": 0,
        "oldest_pending_seconds": 42.0,
    }


def test_workers_in_parallel_end_each_conversation_where_one_by_one_ends(db, queued, debtor, make_debtor):
    """Two workers with four threads each drain 2 x 12 queued messages: per sender they run in arrival order,
    so the racing debtor's conversation ends exactly like the calm one's (drained alone, one by one)."""
    calm = make_debtor(
        creditor=debtor.creditor,
        external_ref="C-2002",
        phone=CALM_PHONE,
        invoices=[{"number": "F-2", "amount": "45990", "due_date": date(2026, 12, 5)}],
    )
    app = twilio_app(queued)
    bodies = ["hola", "cuánto debo", "quiero pagar", "12345678-5", "puedo pagar el viernes", "gracias"] * 2
    for index, body in enumerate(bodies):
        post_sms(app, sms_form(debtor.phone, body, message_sid(index)))
    workers = [InboxWorker(queued.database, queued.inbound, queued.clock, batch_size=3, threads=4) for _ in range(2)]
    _drain_concurrently(workers)
    for index, body in enumerate(bodies):
        post_sms(app, sms_form(calm.phone, body, message_sid(100 + index)))
    calm_worker = queued.inbox_worker()
    while calm_worker.run_once().claimed:
        pass

    with db.session() as session:
        racing_conversation = session.scalars(select(Conversation).where(Conversation.debtor_id == debtor.id)).one()
        calm_conversation = session.scalars(select(Conversation).where(Conversation.debtor_id == calm.id)).one()
        racing_in = session.scalars(
            select(Message.body).where(Message.debtor_id == debtor.id, Message.direction == "in").order_by(Message.id)
        ).all()
    assert racing_in == bodies
    assert (racing_conversation.node, racing_conversation.mode) == (calm_conversation.node, calm_conversation.mode)
    racing_out = count(db, Message, Message.debtor_id == debtor.id, Message.direction == "out")
    assert racing_out == count(db, Message, Message.debtor_id == calm.id, Message.direction == "out")
    assert count(db, InboxItem) == 0


def _drain_concurrently(workers: list[InboxWorker]) -> None:
    idle = [threading.Event() for _ in workers]

    def drain(index: int) -> None:
        misses = 0
        while misses < 3:  # another worker may hold a sender's current message for a moment
            misses = 0 if workers[index].run_once().claimed else misses + 1
        idle[index].set()

    with ThreadPoolExecutor(len(workers)) as pool:
        list(pool.map(drain, range(len(workers))))
    for worker in workers:
        worker.close()


def _inbound_message(sender: str, sid: str) -> InboundMessage:
    return InboundMessage(channel="sms", sender=sender, text="hola", provider_message_id=sid)


def test_healthz_shows_the_inbox_backlog_in_queue_mode(db, queued, debtor):
    app = twilio_app(queued)
    post_sms(app, sms_form(debtor.phone, "hola", message_sid(1)))

    inbox = app.test_client().get("/healthz").get_json()["checks"]["inbox"]

    assert (inbox["pending"], inbox["failed"]) == (1, 0)


def test_the_inbox_worker_command_drains_once_and_exits(db, standin, debtor):
    services = twilio_services(db, utcnow, standin.url, inbound_queue=True)  # the command runs on the real clock
    post_sms(twilio_app(services), sms_form(debtor.phone, "hola", message_sid(1)))
    env = {
        "COBRABOT_DATABASE_URL": db.url,
        "COBRABOT_SECRET_KEY": TEST_SECRET,
        "COBRABOT_PUBLIC_URL": TEST_PUBLIC_URL,
        "COBRABOT_INBOUND_QUEUE": "true",
    }

    result = CliRunner().invoke(main, ["inbox-worker", "--once", "--threads", "2"], env=env, catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert "inbox drained: {'claimed': 1, 'processed': 1, 'retried': 0, 'failed': 0}" in result.output
    assert count(db, InboxItem) == 0
    assert count(db, Message, Message.direction == "in") == 1


def test_the_same_webhook_three_times_at_once_is_one_inbox_row_and_one_turn(db, queued, debtor):
    app = twilio_app(queued)
    form = sms_form(debtor.phone, "hola", message_sid(1))
    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(lambda _: post_sms(app, form).status_code, range(3)))

    assert statuses == [200, 200, 200]
    assert count(db, InboxItem) == 1
    queued.inbox_worker().run_once()
    assert count(db, Message, Message.direction == "in") == 1
    assert count(db, Outbox) == count(db, Message, Message.direction == "out") >= 1


def test_one_accepting_insert_may_carry_the_same_message_twice(db, queued, debtor):
    """Group commit can put a provider's retry in the same statement as the original: stored once."""
    message = _inbound_message(debtor.phone, message_sid(1))

    queued.inbox.accept(Parsed(messages=(message, message)))

    assert count(db, InboxItem) == 1


def test_serve_drains_the_inbox_in_process_when_it_runs_the_jobs(db, standin, debtor):
    from bot.cli import _drain_inbox_in_background

    services = twilio_services(db, utcnow, standin.url, inbound_queue=True)
    post_sms(twilio_app(services), sms_form(debtor.phone, "hola", message_sid(1)))

    stop = _drain_inbox_in_background(services)
    try:
        deadline = time.monotonic() + 10
        while count(db, InboxItem) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()

    assert count(db, InboxItem) == 0
    assert count(db, Message, Message.direction == "in") == 1
