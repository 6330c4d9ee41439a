"""Provider webhooks end to end: signed Twilio requests through the real SDK validator, the engine, the outbox
and the real SDK client sending to a stand-in Twilio API; replays, forgeries and unknown senders."""

from __future__ import annotations

import threading

import pytest
from flask import request
from flask.sessions import NullSession
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from bot.app import create_app
from bot.config import load_settings
from bot.models import Message, Outbox
from bot.services import bootstrap
from bot.web import webhooks
from channels import build_registry
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET

SID, TOKEN = "AC" + "1" * 32, "twilio-test-token"
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"


@pytest.fixture
def twilio(db, clock, standin, database_url):
    settings = load_settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        public_url=TEST_PUBLIC_URL,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_sms_from="+15005550006",
        twilio_whatsapp_from="+14155238886",
        twilio_api_url=standin.url,
    )
    services = bootstrap(settings, database=db, clock=clock, registry=build_registry(settings))
    app = create_app(services=services)
    return services, app


def signed(path: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(TEST_PUBLIC_URL + path, form)}


def sms(sender: str, body: str, sid: str = "SM" + "a" * 32, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": SID, "From": sender, "To": "+15005550006", "Body": body} | extra


def post(app, path: str, form: dict[str, str], headers: dict[str, str] | None = None):
    return app.test_client().post(path, data=form, headers=signed(path, form) if headers is None else headers)


def count(db, model, *where) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_an_sms_gets_a_verification_question_sent_through_twilio(twilio, db, make_debtor, standin):
    services, app = twilio
    debtor = make_debtor()
    response = post(app, "/webhooks/twilio/sms", sms(debtor.phone, "hola"))
    assert response.status_code == 200 and response.mimetype == "text/xml"
    assert count(db, Message, Message.direction == "in") == 1
    assert count(db, Outbox, Outbox.status == "pending") == 1
    standin.respond("POST", MESSAGES, 201, {"sid": "SM" + "b" * 32, "status": "queued", "account_sid": SID})
    assert services.dispatcher.run_once().sent == 1
    [sent] = [r for r in standin.requests if r.path == MESSAGES]
    assert sent.form["To"] == ["+56961234567"] and sent.form["Body"][0].startswith("Hola. Para proteger")
    assert sent.form["StatusCallback"] == [f"{TEST_PUBLIC_URL}/webhooks/twilio/status"]


def test_the_same_webhook_three_times_at_once_is_one_turn_and_one_reply(twilio, db, make_debtor):
    _services, app = twilio
    debtor = make_debtor()
    form = sms(debtor.phone, "hola")
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(post(app, "/webhooks/twilio/sms", form).status_code))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200, 200, 200]
    assert count(db, Message, Message.direction == "in") == 1
    assert count(db, Message, Message.direction == "out") == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"}],
    ids=["missing", "forged"],
)
def test_unsigned_or_forged_requests_are_403_and_store_nothing(twilio, db, make_debtor, headers):
    _services, app = twilio
    debtor = make_debtor()
    response = post(app, "/webhooks/twilio/sms", sms(debtor.phone, "hola"), headers=headers)
    assert response.status_code == 403 and response.get_json()["error"] == "invalid_signature"
    assert count(db, Message) == 0


def test_a_signature_for_another_url_is_rejected(twilio, db, make_debtor):
    _services, app = twilio
    form = sms(make_debtor().phone, "hola")
    response = post(app, "/webhooks/twilio/sms", form, headers=signed("/webhooks/twilio/whatsapp", form))
    assert response.status_code == 403


def test_unknown_sender_is_acknowledged_and_nothing_is_said(twilio, db):
    _services, app = twilio
    assert post(app, "/webhooks/twilio/sms", sms("+56911112222", "hola")).status_code == 200
    assert count(db, Message) == 0


def test_media_only_message_is_stored_as_links_and_acknowledged(twilio, db, make_debtor):
    _services, app = twilio
    debtor = make_debtor()
    form = sms(
        debtor.phone, "", NumMedia="1", MediaUrl0="https://api.twilio.com/media/ME1", MediaContentType0="image/jpeg"
    )
    assert post(app, "/webhooks/twilio/sms", form).status_code == 200
    with db.session() as session:
        inbound = session.scalars(select(Message).where(Message.direction == "in")).one()
        reply = session.scalars(select(Message).where(Message.direction == "out")).one()
    assert inbound.media == ["https://api.twilio.com/media/ME1"]
    assert reply.template_key == "media_received"


def test_status_callbacks_update_the_message(twilio, db, make_debtor, standin):
    services, app = twilio
    debtor = make_debtor()
    post(app, "/webhooks/twilio/sms", sms(debtor.phone, "hola"))
    standin.respond("POST", MESSAGES, 201, {"sid": "SM" + "c" * 32, "status": "queued", "account_sid": SID})
    services.dispatcher.run_once()
    status = {
        "MessageSid": "SM" + "c" * 32,
        "MessageStatus": "delivered",
        "AccountSid": SID,
        "From": "+15005550006",
        "To": debtor.phone,
    }
    assert post(app, "/webhooks/twilio/status", status).status_code == 200
    with db.session() as session:
        assert session.scalars(select(Message.delivery_status).where(Message.direction == "out")).one() == "delivered"


def test_webhook_for_a_disabled_channel_is_404(client, db):
    response = client.post("/webhooks/telegram", json={"update_id": 1})
    assert response.status_code == 404 and response.get_json()["error"] == "channel_disabled"


def test_a_provider_500_then_201_sends_the_reply_exactly_once(twilio, db, make_debtor, standin, clock):
    services, app = twilio
    debtor = make_debtor()
    post(app, "/webhooks/twilio/sms", sms(debtor.phone, "hola"))
    standin.respond("POST", MESSAGES, 500, {"code": 20500, "message": "Internal Server Error", "status": 500})
    standin.respond("POST", MESSAGES, 201, {"sid": "SM" + "d" * 32, "status": "queued", "account_sid": SID})
    services.dispatcher.rates = {}
    assert services.dispatcher.run_once().retried == 1
    clock.advance(minutes=5)
    assert services.dispatcher.run_once().sent == 1
    clock.advance(minutes=5)
    assert services.dispatcher.run_once().sent == 0
    assert len([r for r in standin.requests if r.path == MESSAGES]) == 2
    assert count(db, Outbox, Outbox.status == "sent") == 1


def test_a_mexican_whatsapp_sender_with_the_old_mobile_1_is_recognised(twilio, db, make_creditor, make_debtor):
    _services, app = twilio
    creditor = make_creditor(slug="mx", country="MX", currency="MXN", timezone="America/Mexico_City")
    make_debtor(creditor=creditor, phone="+52 55 1234 5678", invoices=[])
    form = sms("whatsapp:+5215512345678", "hola") | {"To": "whatsapp:+14155238886"}
    assert post(app, "/webhooks/twilio/whatsapp", form).status_code == 200
    assert count(db, Message, Message.direction == "in") == 1


def test_webhooks_get_a_null_session_and_the_console_a_real_one(twilio):
    _services, app = twilio
    with app.test_request_context("/webhooks/twilio/sms", method="POST"):
        assert isinstance(app.session_interface.open_session(app, request), NullSession)
    with app.test_request_context("/admin/login"):
        assert not isinstance(app.session_interface.open_session(app, request), NullSession)
    assert "session=" in app.test_client().get("/admin/login").headers.get("Set-Cookie", "")


def test_the_adapter_gets_the_requests_own_headers_its_body_and_its_form(twilio):
    services, app = twilio
    headers = {"X-Twilio-Signature": "c2ln"}
    with app.test_request_context("/webhooks/twilio/sms?x=1", method="POST", data={"Body": "hola"}, headers=headers):
        app.preprocess_request()  # the NUL guard reads the body before the view does
        built = webhooks._webhook_request(services)
    # A read-only view of the request's headers (no copy per webhook), looked up in any case.
    assert built.headers.get("x-twilio-signature") == built.headers["X-Twilio-Signature"] == "c2ln"
    assert built.form == {"Body": "hola"} and built.body == b"Body=hola"
    assert built.url == TEST_PUBLIC_URL + "/webhooks/twilio/sms?x=1"
