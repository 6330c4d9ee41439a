"""The outbox dispatcher with a collecting channel: send, retry with backoff, fall back, opt-outs, leases."""

from __future__ import annotations

import threading
from collections import deque
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.dispatch import MAX_ATTEMPTS, Dispatcher, backoff, record_status
from bot.domain import (
    ChannelCapabilities,
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    SendResult,
    TransientError,
)
from bot.models import ConsentOptOut, Conversation, Message, Outbox
from bot.ports import ChannelRegistry
from bot.ratelimit import LocalRateLimiter, Rate


class CollectingChannel:
    """Records what would have been sent; scripted outcomes: "ok", a TransientError or a PermanentError."""

    capabilities = ChannelCapabilities()

    def __init__(self, name: str, *outcomes: object) -> None:
        self.name = name
        self.outcomes = deque(outcomes)
        self.sent: list[OutboundMessage] = []
        self.lock = threading.Lock()

    def parse(self, request):  # pragma: no cover - not used by the dispatcher
        raise NotImplementedError

    def send(self, message: OutboundMessage) -> SendResult:
        with self.lock:
            outcome = self.outcomes.popleft() if self.outcomes else "ok"
            if isinstance(outcome, Exception):
                raise outcome
            self.sent.append(message)
            return SendResult(f"{self.name}-{len(self.sent)}-{message.message_id}")


@pytest.fixture
def sms():
    return CollectingChannel("sms")


@pytest.fixture
def email():
    return CollectingChannel("email")


@pytest.fixture
def dispatcher(services, sms, email):
    registry = ChannelRegistry()
    registry.register(sms)
    registry.register(email)
    return Dispatcher(services.database, registry, services.clock, whatsapp_templates={}, rates={})


def queue_reply(services, debtor, text="hola"):
    """A real inbound SMS whose reply lands in the outbox."""
    services.conversations.receive(
        InboundMessage("sms", debtor.phone, text, provider_message_id=f"in-{text}"), debtor.id
    )


def outbox(db):
    with db.session() as session:
        return session.scalars(select(Outbox).order_by(Outbox.id)).all()


def test_a_queued_reply_is_sent_and_its_provider_id_stored(services, dispatcher, sms, make_debtor, db):
    debtor = make_debtor()
    queue_reply(services, debtor)
    report = dispatcher.run_once()
    assert report.sent == 1
    [sent] = sms.sent
    assert sent.recipient == "+56961234567" and sent.text.startswith("Hola.")
    [row] = outbox(db)
    assert row.status == "sent" and row.attempts == 1
    with db.session() as session:
        message = session.get(Message, row.message_id)
        assert message.provider_message_id == f"sms-1-{message.id}" and message.delivery_status == "sent"
    assert dispatcher.run_once().sent == 0  # nothing is sent twice


def test_transient_failure_is_retried_later_with_backoff(services, dispatcher, sms, make_debtor, db, clock):
    sms.outcomes.append(TransientError("503 from provider", retry_after=30))
    debtor = make_debtor()
    queue_reply(services, debtor)
    assert dispatcher.run_once().retried == 1
    [row] = outbox(db)
    assert row.status == "pending" and row.attempts == 1
    assert row.next_attempt_at >= clock() + timedelta(seconds=30)
    assert dispatcher.run_once().sent == 0  # not due yet
    clock.advance(hours=1)
    assert dispatcher.run_once().sent == 1 and len(sms.sent) == 1


def test_backoff_grows_and_is_capped():
    assert 2.5 <= backoff(1) <= 5
    assert 40 <= backoff(5) <= 80
    assert backoff(40) <= 3600
    assert backoff(1, retry_after=120) >= 120


def test_retries_end_and_the_message_falls_back_to_the_next_channel(
    services, dispatcher, sms, email, make_debtor, db, clock
):
    sms.outcomes.extend(TransientError("timeout") for _ in range(MAX_ATTEMPTS))
    debtor = make_debtor(channel_preference=["sms", "email"])
    queue_reply(services, debtor)
    for _ in range(MAX_ATTEMPTS):
        dispatcher.run_once()
        clock.advance(hours=2)
    rows = outbox(db)
    assert [(row.channel, row.status) for row in rows] == [("sms", "failed"), ("email", "pending")]
    dispatcher.run_once()
    assert [message.recipient for message in email.sent] == ["ana@example.cl"]


def test_unreachable_number_falls_back_at_once(services, dispatcher, sms, email, make_debtor, db):
    sms.outcomes.append(PermanentError("invalid number", code="unreachable"))
    debtor = make_debtor(channel_preference=["sms", "email"])
    queue_reply(services, debtor)
    report = dispatcher.run_once()
    assert (report.failed, report.fell_back) == (1, 1)
    dispatcher.run_once()
    assert len(email.sent) == 1


def test_provider_opt_out_is_recorded_and_nothing_falls_back(services, dispatcher, sms, email, make_debtor, db):
    sms.outcomes.append(PermanentError("21610 unsubscribed", code="opted_out"))
    debtor = make_debtor(channel_preference=["sms", "email"])
    queue_reply(services, debtor)
    dispatcher.run_once()
    dispatcher.run_once()
    assert email.sent == []
    with db.session() as session:
        assert session.scalars(select(ConsentOptOut.channel)).all() == ["sms"]


def test_an_opt_out_after_queueing_cancels_the_send(services, dispatcher, sms, make_debtor, db):
    debtor = make_debtor()
    queue_reply(services, debtor)
    with db.session() as session:
        session.add(ConsentOptOut(debtor_id=debtor.id, channel="all", source="agent"))
        session.commit()
    assert dispatcher.run_once().blocked == 1
    assert sms.sent == []
    assert outbox(db)[0].status == "cancelled"


def test_a_lease_left_by_a_crashed_worker_is_taken_over_after_it_expires(services, sms, make_debtor, db, clock):
    registry = ChannelRegistry()
    registry.register(sms)
    crashed = Dispatcher(services.database, registry, clock, lease_seconds=60, rates={})
    debtor = make_debtor()
    queue_reply(services, debtor)
    assert crashed._lease()  # leased, then the worker "dies" before sending
    survivor = Dispatcher(services.database, registry, clock, lease_seconds=60, rates={})
    assert survivor.run_once().sent == 0  # the lease still holds
    clock.advance(seconds=61)
    assert survivor.run_once().sent == 1
    assert len(sms.sent) == 1


def test_two_dispatchers_at_once_send_each_message_once(services, sms, make_creditor, make_debtor, db):
    creditor = make_creditor()
    for number in range(12):
        debtor = make_debtor(
            creditor=creditor, external_ref=f"C-{number}", phone=f"+56 9 6123 45{number:02d}", invoices=[]
        )
        queue_reply(services, debtor, text=f"hola {number}")
    registry = ChannelRegistry()
    registry.register(sms)
    workers = [Dispatcher(services.database, registry, services.clock, batch_size=3, rates={}) for _ in range(2)]

    def drain(worker):
        while worker.run_once().sent:
            pass

    threads = [threading.Thread(target=drain, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [message.message_id for message in sms.sent]
    assert len(ids) == len(set(ids)) == len(outbox(db)) >= 12
    assert all(row.status == "sent" for row in outbox(db))


def test_status_callbacks_move_forward_only_and_21610_opts_out(services, dispatcher, make_debtor, db, clock):
    debtor = make_debtor()
    queue_reply(services, debtor)
    dispatcher.run_once()
    with db.session() as session:
        message = session.scalars(select(Message).where(Message.direction == "out")).one()
        provider_id = message.provider_message_id
        assert record_status(session, DeliveryStatus("sms", provider_id, "delivered"), clock())
        assert record_status(session, DeliveryStatus("sms", provider_id, "sent"), clock())  # late, older news
        assert session.get(Message, message.id).delivery_status == "delivered"
        assert record_status(session, DeliveryStatus("sms", provider_id, "failed", "21610"), clock())
        assert session.get(Message, message.id).delivery_status == "failed"
        assert record_status(session, DeliveryStatus("sms", "unknown-id", "delivered"), clock()) is False
        session.commit()
        assert session.scalar(select(func.count()).select_from(ConsentOptOut)) == 1


def test_whatsapp_outside_the_window_uses_the_approved_template(services, make_debtor, db, clock):
    whatsapp = CollectingChannel("whatsapp")
    registry = ChannelRegistry()
    registry.register(whatsapp)
    dispatcher = Dispatcher(services.database, registry, clock, whatsapp_templates={"verify_identity": {"es": "HX123"}})
    debtor = make_debtor()
    services.conversations.receive(
        InboundMessage("whatsapp", debtor.phone, "hola", provider_message_id="w1"), debtor.id
    )
    with db.session() as session:
        conversation = session.scalars(select(Conversation)).one()
        conversation.last_inbound_at = clock() - timedelta(hours=25)
        session.commit()
    dispatcher.run_once()
    [sent] = whatsapp.sent
    assert sent.metadata["content_sid"] == "HX123"


def test_the_sender_rate_limit_defers_without_spending_an_attempt(services, sms, make_creditor, make_debtor, db, clock):
    registry = ChannelRegistry()
    registry.register(sms)
    limited = Dispatcher(
        services.database, registry, clock, rates={"sms": Rate(1.0, 1)}, limiter=LocalRateLimiter(lambda: 0.0)
    )
    creditor = make_creditor()
    for number in range(2):
        debtor = make_debtor(
            creditor=creditor, external_ref=f"R-{number}", phone=f"+56 9 6123 45{number:02d}", invoices=[]
        )
        queue_reply(services, debtor, text=f"buenas {'ab'[number]}")
    report = limited.run_once()
    assert (report.sent, report.rate_limited) == (1, 1)
    deferred = [row for row in outbox(db) if row.status == "pending"]
    assert len(deferred) == 1 and deferred[0].attempts == 0
    assert deferred[0].next_attempt_at == clock() + timedelta(seconds=1)


def test_outside_window_error_resends_the_same_message_as_the_approved_template(services, make_debtor, db, clock):
    whatsapp = CollectingChannel("whatsapp", PermanentError("63016", code="outside_window"))
    registry = ChannelRegistry()
    registry.register(whatsapp)
    dispatcher = Dispatcher(
        services.database, registry, clock, rates={}, whatsapp_templates={"verify_identity": {"es": "HX9"}}
    )
    debtor = make_debtor()
    services.conversations.receive(
        InboundMessage("whatsapp", debtor.phone, "hola", provider_message_id="w2"), debtor.id
    )
    dispatcher.run_once()  # inside the window as far as we knew: free text, refused by Twilio
    dispatcher.run_once()
    [sent] = whatsapp.sent
    assert sent.metadata["content_sid"] == "HX9"
    assert [row.status for row in outbox(db)] == ["sent"]


def test_email_replies_thread_and_carry_a_one_click_unsubscribe_link(services, email, make_debtor, db):
    registry = ChannelRegistry()
    registry.register(email)
    dispatcher = Dispatcher(
        services.database, registry, services.clock, rates={}, unsubscribe=services.dispatcher.unsubscribe
    )
    debtor = make_debtor()
    message = InboundMessage("email", "ana@example.cl", "hola", provider_message_id="abc@mail.example")
    services.conversations.receive(message, debtor.id)
    dispatcher.run_once()
    [sent] = email.sent
    assert sent.metadata["in_reply_to"] == "abc@mail.example"
    assert sent.metadata["subject"] == "Su consulta"  # not verified yet: the creditor is not named
    assert sent.metadata["unsubscribe_url"].startswith("https://cobrabot.example/u/")


def bot_message(services, debtor, template_key="promise_reminder"):
    from bot.outreach import queue_bot_message

    with services.database.unit_of_work() as uow:
        debtor_row = uow.session.get(type(debtor), debtor.id)
        queued = queue_bot_message(uow.session, debtor_row, "thanks", {"debtor_name": "Ana"}, services.clock())
        uow.commit()
    return queued


def test_bot_initiated_message_in_quiet_hours_waits_for_the_morning(services, dispatcher, sms, make_debtor, db, clock):
    from datetime import UTC, datetime

    clock.now = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # 00:00 in Santiago
    debtor = make_debtor(channel_preference=["sms"])
    bot_message(services, debtor)
    assert dispatcher.run_once().deferred == 1
    [row] = outbox(db)
    assert row.status == "pending" and row.attempts == 0
    assert row.decision_reason.startswith("defer:quiet_hours")
    assert row.next_attempt_at == datetime(2026, 11, 26, 11, 0, tzinfo=UTC)  # 08:00 local
    clock.now = row.next_attempt_at
    assert dispatcher.run_once().sent == 1


def test_bot_initiated_message_is_blocked_while_a_dispute_is_open(services, dispatcher, sms, make_debtor, db):
    from bot.models import Case

    debtor = make_debtor(channel_preference=["sms"])
    with db.session() as session:
        session.add(Case(debtor_id=debtor.id, kind="dispute", status="open"))
        session.commit()
    bot_message(services, debtor)
    assert dispatcher.run_once().blocked == 1
    assert sms.sent == [] and outbox(db)[0].decision_reason.startswith("block:dispute_open")


def test_first_bot_contact_carries_the_creditors_disclosure(services, dispatcher, sms, make_creditor, make_debtor, db):
    creditor = make_creditor(compliance_rules={"first_contact_disclosure": "validation_notice"})
    debtor = make_debtor(creditor=creditor, channel_preference=["sms"])
    bot_message(services, debtor)
    dispatcher.run_once()
    [sent] = sms.sent
    assert sent.text.startswith("Aguas del Valle le informa: este mensaje es parte de la gestión de cobranza")


def test_a_message_in_flight_counts_against_the_cap_of_the_next_one(services, dispatcher, make_debtor, db, clock):
    from datetime import UTC, datetime

    clock.now = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # noon in Santiago: inside the hours
    debtor = make_debtor(channel_preference=["sms"])
    bot_message(services, debtor)
    bot_message(services, debtor)
    first, second = dispatcher._lease()
    assert isinstance(dispatcher._prepare(first), tuple)  # cleared and now being sent by "another worker"
    assert dispatcher._prepare(second) == "deferred"  # one bot message a day: the in-flight one counts


class SameIdChannel(CollectingChannel):
    """A provider that answers every send with the same id (a buggy sandbox, or an id we already hold)."""

    def send(self, message: OutboundMessage) -> SendResult:
        super().send(message)
        return SendResult("SM-the-same-id")


def test_a_provider_id_already_recorded_still_marks_the_message_sent_once(services, make_debtor, db):
    registry = ChannelRegistry()
    provider = SameIdChannel("sms")
    registry.register(provider)
    dispatcher = Dispatcher(services.database, registry, services.clock, whatsapp_templates={}, rates={})
    debtor = make_debtor()
    queue_reply(services, debtor, "hola")
    queue_reply(services, debtor, "cuánto debo")
    assert dispatcher.run_once().sent == len(provider.sent) >= 2
    assert dispatcher.run_once().sent == 0  # recorded as sent: never sent again
    with db.session() as session:
        rows = session.scalars(select(Outbox)).all()
        ids = [session.get(Message, row.message_id).provider_message_id for row in rows]
    assert {row.status for row in rows} == {"sent"}
    assert ids.count("SM-the-same-id") == 1  # the id stays with the first message; the others keep theirs empty
    assert any("already recorded" in (row.last_error or "") for row in rows)
