"""A whole conversation logged at INFO (every logger) never names the debtor's phone, email or what they wrote."""

from __future__ import annotations

import logging

import pytest

from bot.dispatch import Dispatcher
from tests.faults.helpers import MESSAGES, SID, post_sms, signature, sms_form, twilio_app, twilio_services

PHONE, PHONE_E164 = "+56 9 6123 4567", "+56961234567"
EMAIL = "ana.privada@example.cl"
BODIES = ["hola, soy ana.privada@example.cl", "mi rut es 12.345.678-5", "quiero pagar en 3 cuotas por favor"]


@pytest.mark.parametrize("queue", [False, True], ids=["in-request", "inbound-queue"])
def test_a_full_conversation_logs_no_phone_email_or_message_text(db, clock, standin, make_debtor, caplog, queue):
    caplog.set_level(logging.INFO)  # the root logger: every module's INFO and above
    services = twilio_services(db, clock, standin.url, inbound_queue=queue)
    drain = services.inbox_worker().run_once if queue else lambda: None
    app = twilio_app(services)
    dispatcher = Dispatcher(services.database, services.registry, clock, rates={})  # every reply goes out now
    make_debtor(phone=PHONE, email=EMAIL)
    for index in range(len(BODIES) + 2):
        standin.respond("POST", MESSAGES, 201, {"sid": f"SMo{index:031d}", "status": "queued", "account_sid": SID})
    for index, body in enumerate(BODIES):
        assert post_sms(app, sms_form(PHONE_E164, body, f"SMi{index:031d}")).status_code == 200
        drain()
        assert dispatcher.run_once().sent >= 1
    unknown = sms_form("+56911112222", "un desconocido escribe", "SMu" + "0" * 31)
    assert post_sms(app, unknown).status_code == 200
    drain()
    status = {"MessageSid": "SMo" + "0" * 31, "MessageStatus": "delivered", "AccountSid": SID, "To": PHONE_E164}
    headers = {"X-Twilio-Signature": signature("/webhooks/twilio/status", status)}
    assert app.test_client().post("/webhooks/twilio/status", data=status, headers=headers).status_code == 200

    assert len(standin.requests) == len(BODIES)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "the conversation logged nothing at all: the capture is not working"
    secrets = [PHONE, PHONE_E164, PHONE_E164[1:], "96123 4567", EMAIL, "12.345.678-5", "12345678", "+56911112222"]
    secrets += [*BODIES, "un desconocido escribe"]
    leaked = [secret for secret in secrets if secret in logged]
    assert leaked == [], f"personal data in the logs: {leaked}"
