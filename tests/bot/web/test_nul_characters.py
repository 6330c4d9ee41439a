"""A NUL character anywhere a request carries text is refused with 400 and changes nothing.

PostgreSQL text cannot hold NUL, so before this guard a signed Twilio status callback with MessageSid "\\x00"
(found by the fuzz run) reached the database and answered 500, which makes providers retry forever.
"""

from __future__ import annotations

import json

import pytest

from tests.faults.helpers import (
    row_counts,
    sms_form,
    twilio_app,
    twilio_services,
)
from tests.faults.helpers import signature as twilio_signature

TELEGRAM_SECRET = "tg-nul-secret"
DEBTOR_PHONE = "+56961234567"


@pytest.fixture
def client(db, clock, standin, make_debtor):
    services = twilio_services(
        db,
        clock,
        standin.url,
        telegram_bot_token="123:nul",
        telegram_secret=TELEGRAM_SECRET,
        telegram_api_url=standin.url,
    )
    make_debtor(phone=DEBTOR_PHONE)
    return twilio_app(services).test_client()


def signed_twilio(client, path: str, form: dict[str, str]):
    return client.post(path, data=form, headers={"X-Twilio-Signature": twilio_signature(path, form)})


def telegram_update(text: str) -> bytes:
    message = {"message_id": 1, "date": 1795000000, "chat": {"id": 7, "type": "private"}, "text": text}
    return json.dumps({"update_id": 1, "message": message}).encode()


CASES = {
    "status callback id": lambda c: signed_twilio(
        c, "/webhooks/twilio/status", {"MessageSid": "\x00", "MessageStatus": "delivered"}
    ),
    "sms body": lambda c: signed_twilio(c, "/webhooks/twilio/sms", sms_form(DEBTOR_PHONE, "hola\x00", "SM" + "1" * 32)),
    "sms sender": lambda c: signed_twilio(c, "/webhooks/twilio/sms", sms_form("+569\x00", "hola", "SM" + "2" * 32)),
    "telegram text": lambda c: c.post(
        "/webhooks/telegram",
        data=telegram_update("pago\x00"),
        headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET, "Content-Type": "application/json"},
    ),
    "short link code": lambda c: c.get("/l/ab%00cd"),
    "query string": lambda c: c.get("/healthz?x=%00"),
}


@pytest.mark.parametrize("send", CASES.values(), ids=CASES.keys())
def test_a_nul_character_is_refused_and_changes_nothing(client, db, send):
    before = row_counts(db)
    response = send(client)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert "NUL" in response.get_data(as_text=True)
    assert row_counts(db) == before


def test_text_without_nul_still_goes_through(client, db):
    response = signed_twilio(client, "/webhooks/twilio/sms", sms_form(DEBTOR_PHONE, "hola", "SM" + "3" * 32))
    assert response.status_code == 200
    assert row_counts(db)["messages"] >= 1
