"""A NUL character anywhere a request carries text is refused with 400 and changes nothing.

PostgreSQL text cannot hold NUL, so before this guard a signed Twilio status callback with MessageSid "\\x00"
(found by the fuzz run) reached the database and answered 500, which makes providers retry forever.
"""

from __future__ import annotations

import io
import json

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from bot.web import nul_guard
from bot.web.nul_guard import first_nul
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


def parsed_request(path: str = "/webhooks/x", **builder: object) -> Request:
    return Request(EnvironBuilder(path=path, method="POST", **builder).get_environ())  # type: ignore[arg-type]


JSON = {"content_type": "application/json"}
MULTIPART = "multipart/form-data"
RFC2231_NAME = b"--b\r\nContent-Disposition: form-data; name*=UTF-8''n%00te\r\n\r\nhi\r\n--b--\r\n"
FORM = "application/x-www-form-urlencoded"
SPOTTED = {
    "raw in a form value": (parsed_request(data={"Body": "a\x00b"}), "form"),
    "percent-encoded in a form": (parsed_request(data=b"Body=a%00b", content_type=FORM), "form"),
    "in a form key": (parsed_request(data=b"B%00dy=a", content_type=FORM), "form"),
    "json escape": (parsed_request(data=b'{"text": "a\\u0000b"}', **JSON), "json"),
    "json key": (parsed_request(data=b'{"a\\u0000": 1}', **JSON), "json"),
    "utf-16 json": (parsed_request(data='{"text": "a\\u0000b"}'.encode("utf-16"), **JSON), "json"),
    "query": (parsed_request(query_string="x=%00"), "query"),
    "raw query": (parsed_request(query_string="x=\x00"), "query"),
    "path": (parsed_request(path="/l/a\x00b"), "path"),
    "text body": (parsed_request(data=b"a\x00b", content_type="text/plain"), "body"),
    "multipart field": (parsed_request(data={"note": "a\x00b"}, content_type="multipart/form-data"), "form"),
    "multipart field name": (parsed_request(data=RFC2231_NAME, content_type=f"{MULTIPART}; boundary=b"), "form"),
}


@pytest.mark.parametrize(("incoming", "where"), SPOTTED.values(), ids=SPOTTED.keys())
def test_every_way_of_writing_nul_is_spotted(incoming, where):
    assert first_nul(incoming) == where


NOT_NUL = {
    "escaped percent": parsed_request(data=b"Body=%2500", content_type=FORM),
    "escaped json backslash": parsed_request(data=b'{"text": "\\\\u0000"}', **JSON),
    "uploaded file": parsed_request(data={"statement": (io.BytesIO(b"a\x00b"), "s.bin")}),
    "clean form": parsed_request(data={"Body": "hola", "From": "+56961234567"}),
}


@pytest.mark.parametrize("incoming", NOT_NUL.values(), ids=NOT_NUL.keys())
def test_what_only_looks_like_nul_passes(incoming):
    assert first_nul(incoming) is None


def test_a_body_without_any_nul_marker_is_not_walked_and_its_form_still_parses(monkeypatch):
    # The fast path: a few byte searches, no field-by-field walk; the body it read stays readable as a form.
    monkeypatch.setattr(nul_guard, "_where_nul", lambda incoming: pytest.fail("walked a clean request"))
    incoming = parsed_request(data={"Body": "hola", "From": "+56961234567"})
    assert first_nul(incoming) is None
    assert incoming.form.to_dict() == {"Body": "hola", "From": "+56961234567"}
    assert incoming.get_data() == b"Body=hola&From=%2B56961234567"
