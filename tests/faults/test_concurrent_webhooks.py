"""One debtor sends 20 messages at once through signed Twilio webhooks (each also delivered twice, as Twilio's
retries do): every message is stored once, every reply is queued once, and the conversation ends where handling
the same messages one by one ends. Runs on PostgreSQL when the suite does (row locks), else SQLite."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest
from sqlalchemy import select

from bot.models import Conversation, Message, Outbox
from tests.faults.helpers import count, message_sid, post_sms, sms_form, twilio_app, twilio_services

MESSAGES = 20


@pytest.mark.slow
def test_twenty_messages_at_once_from_one_debtor_are_each_one_turn(db, clock, standin, make_creditor, make_debtor):
    app = twilio_app(twilio_services(db, clock, standin.url))
    creditor = make_creditor()
    racing = make_debtor(creditor=creditor)
    calm = make_debtor(
        creditor=creditor,
        external_ref="C-2002",
        phone="+56 9 6123 4568",
        invoices=[{"number": "F-2", "amount": "45990", "due_date": date(2026, 12, 5)}],
    )
    # The same text every time: the engine's outcome does not depend on which message won the lock first.
    forms = [sms_form(racing.phone, "hola", message_sid(index)) for index in range(MESSAGES)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda form: post_sms(app, form).status_code, forms + forms))
    for index in range(MESSAGES):
        assert post_sms(app, sms_form(calm.phone, "hola", message_sid(1000 + index))).status_code == 200

    assert statuses == [200] * (2 * MESSAGES)
    with db.session() as session:
        racing_conversation = session.scalars(select(Conversation).where(Conversation.debtor_id == racing.id)).one()
        calm_conversation = session.scalars(select(Conversation).where(Conversation.debtor_id == calm.id)).one()
        inbound_ids = session.scalars(
            select(Message.provider_message_id).where(Message.debtor_id == racing.id, Message.direction == "in")
        ).all()
    assert sorted(inbound_ids) == sorted(form["MessageSid"] for form in forms)  # none lost, none twice
    racing_out = count(db, Message, Message.debtor_id == racing.id, Message.direction == "out")
    calm_out = count(db, Message, Message.debtor_id == calm.id, Message.direction == "out")
    assert racing_out == calm_out >= MESSAGES
    assert count(db, Outbox) == racing_out + calm_out  # every reply queued exactly once
    # No lost update: the optimistic version (1 at creation) moved at least once per turn, like the calm one's.
    assert racing_conversation.version >= MESSAGES + 1 and calm_conversation.version >= MESSAGES + 1
    assert (racing_conversation.node, racing_conversation.mode) == (calm_conversation.node, calm_conversation.mode)
    assert _without_timestamps(racing_conversation.slots) == _without_timestamps(calm_conversation.slots)


def _without_timestamps(slots: dict[str, object] | None) -> dict[str, object]:
    return {key: value for key, value in (slots or {}).items() if key != "_at"}
