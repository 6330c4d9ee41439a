"""The inbox workers' fast path: many senders' next messages as one transaction, with the same outcome as one by one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date

import pytest
from flask import Flask
from sqlalchemy import event, select

from bot.domain import InboundMessage, Parsed, utcnow
from bot.inbox import InboxWorker, as_inbound_message
from bot.models import Conversation, Debtor, InboxItem, Message, Outbox
from bot.services import Services
from bot.turn_batch import receive_batch
from tests.faults.helpers import count, message_sid, post_sms, sms_form, twilio_app, twilio_services

BODIES = ["hola", "cuánto debo", "quiero pagar", "12345678-5", "puedo pagar el viernes", "gracias"]


@pytest.fixture
def queued(db, clock, standin) -> Services:
    if db.dialect != "postgresql":
        pytest.skip("turns are batched on PostgreSQL only (SQLite runs them one by one)")
    return twilio_services(db, clock, standin.url, inbound_queue=True)


@pytest.fixture
def debtors(make_debtor, make_creditor) -> Callable[[int, int], list[Debtor]]:
    creditor = make_creditor()

    def make(first: int, how_many: int) -> list[Debtor]:
        return [
            make_debtor(
                creditor=creditor,
                external_ref=f"C-{number}",
                phone=f"+56 9 61{number:02d} 4567",
                email=f"debtor{number}@example.cl",
                invoices=[{"number": f"F-{number}", "amount": "45990", "due_date": date(2026, 12, 5)}],
            )
            for number in range(first, first + how_many)
        ]

    return make


def test_a_batch_ends_every_conversation_where_one_by_one_ends(db, queued, debtors):
    batched, single = debtors(10, 4), debtors(20, 4)

    app = twilio_app(queued)
    _post_all(app, batched, BODIES, first_sid=0)
    _drain(InboxWorker(queued.database, queued.inbound, queued.clock, batch_size=8))
    _post_all(app, single, BODIES, first_sid=1000)
    _drain(InboxWorker(queued.database, queued.inbound, queued.clock, batch_size=1))

    outcomes = {debtor.id: _outcome(db, debtor) for debtor in batched + single}
    expected = outcomes[single[0].id]
    assert expected[0] not in ("start", None) and len(expected[2]) > len(BODIES)  # a real conversation happened
    assert all(outcome == expected for outcome in outcomes.values())
    assert count(db, InboxItem) == 0


def test_a_batch_of_senders_is_one_transaction(db, queued, debtors):
    group = debtors(10, 5)
    _post_all(twilio_app(queued), group, ["hola"], first_sid=0)

    with _commits(db) as commits:
        report = queued.inbox_worker(batch_size=8).run_once()

    assert report.processed == 5
    assert len(commits) == 2  # the turns' transaction, then the claim's (deleting the inbox rows)
    assert count(db, Message, Message.direction == "in") == 5


def test_with_an_llm_configured_each_queued_turn_commits_alone(db, queued, clock, standin, debtors):
    """Model calls take seconds: a batch's transaction would hold its conversations' locks through all of them."""
    with_llm = twilio_services(db, clock, standin.url, inbound_queue=True, openai_api_key="sk-test-never-used")
    assert with_llm.settings.llm_enabled and not with_llm.inbox_worker().batched
    assert queued.inbox_worker().batched
    _post_all(twilio_app(queued), debtors(10, 3), ["hola"], first_sid=0)

    with _commits(db) as commits:
        assert InboxWorker(db, queued.inbound, clock, batch_size=8, batched=False).run_once().processed == 3

    assert len(commits) == 4  # one per turn, then the claim's


def test_a_failing_turn_rolls_the_batch_back_and_fails_alone(db, queued, debtors, monkeypatch):
    group = debtors(10, 3)
    _post_all(twilio_app(queued), group, ["hola"], first_sid=0)
    engine = queued.inbound.conversations.engine
    handle = engine.handle

    def broken_for_the_second(state, message, facts, clock):
        if message.provider_message_id == message_sid(1):
            raise RuntimeError("engine bug")
        return handle(state, message, facts, clock)

    monkeypatch.setattr(engine, "handle", broken_for_the_second)

    report = queued.inbox_worker(batch_size=8).run_once()

    assert report.as_dict() == {"claimed": 3, "processed": 2, "retried": 1, "failed": 0}
    replied = {
        debtor.id: count(db, Message, Message.debtor_id == debtor.id, Message.direction == "out") for debtor in group
    }
    assert replied[group[1].id] == 0 and count(db, Message, Message.debtor_id == group[1].id) == 0
    assert replied[group[0].id] == replied[group[2].id] >= 1  # answered once, by the one-by-one rerun
    assert count(db, InboxItem) == 1


def test_a_message_whose_turn_already_committed_is_not_answered_again_in_a_batch(db, queued, debtors):
    first, second = debtors(10, 2)
    _post_all(twilio_app(queued), [first, second], ["hola"], first_sid=0)
    with db.session() as session:
        crashed = session.scalars(select(InboxItem).where(InboxItem.provider_message_id == message_sid(0))).one()
        queued.inbound.handle(Parsed(messages=(as_inbound_message(crashed),)))  # committed, then the worker died
    answered = count(db, Message, Message.debtor_id == first.id, Message.direction == "out")

    assert queued.inbox_worker(batch_size=8).run_once().processed == 2

    assert count(db, Message, Message.debtor_id == first.id, Message.direction == "out") == answered
    assert count(db, Message, Message.debtor_id == first.id, Message.direction == "in") == 1
    assert count(db, Message, Message.debtor_id == second.id, Message.direction == "out") >= 1


def test_unknown_senders_and_media_only_messages_leave_the_batch_for_the_one_by_one_path(db, queued, debtors):
    (debtor,) = debtors(10, 1)
    messages = [
        _email("nobody@example.cl", "hola", "m-0"),
        _email(debtor.email, "hola", "m-1"),
        InboundMessage(channel="email", sender=debtor.email, text=" ", provider_message_id="m-2"),
    ]

    received = receive_batch(queued.inbound.conversations, messages)

    assert set(received) == {1}
    assert received[1].replies and not received[1].duplicate


def test_a_batched_message_is_stored_as_received_with_its_intent_and_attachment_links(db, queued, debtors, clock):
    (debtor,) = debtors(10, 1)
    sent = InboundMessage(
        channel="email", sender=debtor.email, text="quiero pagar", provider_message_id="m-0",
        received_at=clock(), media_urls=("https://files.example.cl/recibo.pdf",),
    )  # fmt: skip

    assert set(receive_batch(queued.inbound.conversations, [sent])) == {0}

    with db.session() as session:
        stored = session.scalars(select(Message).where(Message.direction == "in")).one()
    assert (stored.body, stored.media, stored.provider_message_id, stored.created_at) == (
        "quiero pagar", ["https://files.example.cl/recibo.pdf"], "m-0", clock()
    )  # fmt: skip
    assert stored.intent and stored.confidence is not None and stored.delivery_status == "received"


def test_each_reply_is_stored_under_the_id_it_is_sent_with_and_queued_on_the_turns_clock(db, queued, debtors, clock):
    group = debtors(10, 3)
    messages = [
        _email(debtor.email, body, f"m-{n}") for n, (debtor, body) in enumerate(zip(group, BODIES, strict=False))
    ]

    received = receive_batch(queued.inbound.conversations, messages)

    replies = [reply for index in sorted(received) for reply in received[index].replies]
    assert len(replies) >= 3
    with db.session() as session:
        stored = {message.id: message for message in session.scalars(select(Message).where(Message.direction == "out"))}
        queued_rows = {row.message_id: row for row in session.scalars(select(Outbox))}
    for reply in replies:
        message = stored[reply.message_id]
        assert (message.body, message.template_key, message.channel) == (reply.text, reply.template_key, "email")
        assert (message.delivery_status, message.media, message.created_at) == ("queued", [], clock())
        row = queued_rows[reply.message_id]
        assert (row.initiated_by, row.status, row.next_attempt_at, row.channel) == (
            "reply",
            "pending",
            clock(),
            "email",
        )
    assert len(queued_rows) == len(stored) == len(replies)


def test_one_conversation_takes_one_message_of_a_batch_the_earliest(db, queued, debtors):
    """Two spellings of one address are two inbox senders but one conversation: only the first is batched."""
    (debtor,) = debtors(10, 1)
    messages = [_email(debtor.email.upper(), "hola", "m-0"), _email(debtor.email, "gracias", "m-1")]

    assert set(receive_batch(queued.inbound.conversations, messages)) == {0}
    with db.session() as session:
        stored = session.scalars(select(Message.body).where(Message.direction == "in")).all()
    assert stored == ["hola"]


def test_sqlite_runs_queued_turns_one_by_one(db, clock, standin, debtors):
    if db.dialect == "postgresql":
        pytest.skip("SQLite's behaviour")
    services = twilio_services(db, clock, standin.url, inbound_queue=True)
    (debtor,) = debtors(10, 1)

    assert receive_batch(services.inbound.conversations, [_email(debtor.email, "hola", "m-0")]) == {}


def _post_all(app: Flask, debtors: list[Debtor], bodies: list[str], *, first_sid: int) -> None:
    """Every debtor's messages, interleaved as they would arrive: each debtor's first, then each one's second..."""
    sid = first_sid
    for body in bodies:
        for debtor in debtors:
            assert post_sms(app, sms_form(debtor.phone, body, message_sid(sid))).status_code == 200
            sid += 1


def _drain(worker: InboxWorker) -> None:
    while worker.run_once().claimed:
        pass


def _outcome(db, debtor: Debtor) -> tuple[str, str, list[str]]:
    with db.session() as session:
        conversation = session.scalars(select(Conversation).where(Conversation.debtor_id == debtor.id)).one()
        keys = session.scalars(
            select(Message.template_key).where(Message.debtor_id == debtor.id).order_by(Message.id)
        ).all()
    return conversation.node, conversation.mode, list(keys)


def _email(sender: str, text: str, message_id: str) -> InboundMessage:
    return InboundMessage(
        channel="email", sender=sender, text=text, provider_message_id=message_id, received_at=utcnow()
    )


@contextmanager
def _commits(db) -> Iterator[list[object]]:
    """The COMMITs on the database's engine while open."""
    seen: list[object] = []

    def note(connection: object) -> None:
        seen.append(connection)

    event.listen(db.engine, "commit", note)
    try:
        yield seen
    finally:
        event.remove(db.engine, "commit", note)
