"""Hypothesis throws arbitrary bodies at every webhook parser and the API: never a 5xx, and a rejected request
changes nothing (messages, outbox, payments, debtors). COBRABOT_FUZZ_EXAMPLES raises the example count (CI slow run)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import create_app
from bot.config import load_settings
from bot.services import bootstrap
from channels import build_registry
from tests.conftest import TEST_API_TOKEN, TEST_PUBLIC_URL, TEST_SECRET
from tests.faults.helpers import SID, SMS_FROM, TOKEN, row_counts, signature

EXAMPLES = int(os.environ.get("COBRABOT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Queue mode shares the parsers fuzzed above; its own part (accept, then a worker's turn) gets a quarter of the
# examples, which keeps CI's two databases within its time budget.
QUEUE_FUZZ = settings(FUZZ, max_examples=max(150, EXAMPLES // 4))
TELEGRAM_SECRET, EMAIL_SECRET = "tg-fuzz-secret", "mail-fuzz-secret"
DEBTOR_PHONE = "+56961234567"

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=120)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=20,
)


@pytest.fixture
def fuzz_client(db, clock, standin, make_debtor) -> Iterator[FlaskClient]:
    yield _client(db, clock, standin, make_debtor, inbound_queue=False)


@pytest.fixture
def queued_fuzz_client(db, clock, standin, make_debtor) -> Iterator[FlaskClient]:
    """COBRABOT_INBOUND_QUEUE: the webhook only stores what it parsed; the inbox worker runs it after each case."""
    yield _client(db, clock, standin, make_debtor, inbound_queue=True)


def _client(db, clock, standin, make_debtor, *, inbound_queue: bool) -> FlaskClient:
    app_settings = load_settings(
        inbound_queue=inbound_queue,
        database_url=db.url,
        secret_key=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        public_url=TEST_PUBLIC_URL,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_sms_from=SMS_FROM,
        twilio_whatsapp_from="+14155238886",
        twilio_api_url=standin.url,
        telegram_bot_token="123:fuzz",
        telegram_secret=TELEGRAM_SECRET,
        telegram_api_url=standin.url,
        smtp_url="smtp://127.0.0.1:1",
        email_from="cobranza@aguas.example",
        email_webhook_secret=EMAIL_SECRET,
        stripe_webhook_secret="whsec_fuzz",
    )
    services = bootstrap(app_settings, database=db, clock=clock, registry=build_registry(app_settings))
    make_debtor(phone=DEBTOR_PHONE)
    app = create_app(services=services)
    return app.test_client()


def check(database, client: FlaskClient, send) -> None:
    before = row_counts(database)
    response = send(client)
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    if response.status_code >= 400:
        assert row_counts(database) == before, f"a rejected {response.status_code} changed rows"


twilio_forms = st.dictionaries(
    st.sampled_from(["MessageSid", "AccountSid", "From", "To", "Body", "NumMedia", "MediaUrl0", "MessageStatus"])
    | text,
    text | st.sampled_from([DEBTOR_PHONE, f"whatsapp:{DEBTOR_PHONE}", SMS_FROM, SID, "1", "99", "-1"]),
    max_size=8,
)


twilio_cases = given(
    path=st.sampled_from(["/webhooks/twilio/sms", "/webhooks/twilio/whatsapp", "/webhooks/twilio/status"]),
    form=twilio_forms,
    signed=st.booleans(),
)


@pytest.mark.slow
@FUZZ
@twilio_cases
def test_twilio_form_bodies(fuzz_client, db, path, form, signed):
    check(db, fuzz_client, _twilio_post(path, form, signed))


@pytest.mark.slow
@QUEUE_FUZZ
@twilio_cases
def test_twilio_form_bodies_in_queue_mode(queued_fuzz_client, db, path, form, signed):
    check(db, queued_fuzz_client, _twilio_post(path, form, signed))
    _drain(queued_fuzz_client)


def _twilio_post(path: str, form: dict[str, str], signed: bool):
    headers = {"X-Twilio-Signature": signature(path, form) if signed else "Zm9yZ2Vk"}
    return lambda client: client.post(path, data=form, headers=headers)


@pytest.mark.slow
@FUZZ
@given(update=json_values, raw=st.binary(max_size=300), use_raw=st.booleans(), secret_ok=st.booleans())
def test_telegram_updates(fuzz_client, db, update, raw, use_raw, secret_ok):
    body = raw if use_raw else json.dumps(update).encode()
    headers = {
        "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET if secret_ok else "wrong",
        "Content-Type": "application/json",
    }
    check(db, fuzz_client, lambda client: client.post("/webhooks/telegram", data=body, headers=headers))


mime_headers = st.lists(
    st.tuples(st.sampled_from(["From", "To", "Subject", "Message-ID", "Content-Type", "In-Reply-To", "X"]), text),
    max_size=6,
)


email_cases = given(headers=mime_headers, body=text, raw=st.binary(max_size=400), use_raw=st.booleans())


@pytest.mark.slow
@FUZZ
@email_cases
def test_raw_mime_email(fuzz_client, db, headers, body, raw, use_raw):
    check(db, fuzz_client, _email_post(headers, body, raw, use_raw))


@pytest.mark.slow
@QUEUE_FUZZ
@email_cases
def test_raw_mime_email_in_queue_mode(queued_fuzz_client, db, headers, body, raw, use_raw):
    check(db, queued_fuzz_client, _email_post(headers, body, raw, use_raw))
    _drain(queued_fuzz_client)


def _email_post(headers: list[tuple[str, str]], body: str, raw: bytes, use_raw: bool):
    mail = raw if use_raw else ("".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n" + body).encode("utf-8")
    request_headers = {"X-Cobrabot-Email-Secret": EMAIL_SECRET, "Content-Type": "message/rfc822"}
    return lambda client: client.post("/webhooks/email", data=mail, headers=request_headers)


def _drain(client: FlaskClient) -> None:
    """Run what was queued. A turn that raised would be a 500 in the default mode; here it would be retried and
    parked, so it is asserted away just the same."""
    report = client.application.extensions["cobrabot"].inbox_worker().run_once()
    assert (report.retried, report.failed) == (0, 0), report


@pytest.mark.slow
@FUZZ
@given(
    provider=st.sampled_from(["stripe", "mercadopago"]),
    payload=json_values,
    signature_header=header_text,
    query=st.dictionaries(st.sampled_from(["data.id", "type", "id", "topic"]), text, max_size=3),
)
def test_payment_webhooks_with_bad_signatures(fuzz_client, db, provider, payload, signature_header, query):
    headers = {"Stripe-Signature": signature_header, "X-Signature": signature_header, "X-Request-Id": "fuzz"}
    body = json.dumps(payload).encode()

    def send(client: FlaskClient):
        return client.post(f"/webhooks/payments/{provider}", data=body, headers=headers, query_string=query)

    before = row_counts(db)
    response = send(fuzz_client)
    assert response.status_code < 500 or response.get_json()["error"] == "provider_unavailable"
    assert response.status_code != 200 and row_counts(db) == before


API_WRITES = [
    ("PUT", "/api/v1/creditors/aguas-andinas"),
    ("PUT", "/api/v1/creditors/aguas-andinas/debtors/C-1001"),
    ("POST", "/api/v1/creditors/aguas-andinas/debtors/C-1001/payments"),
    ("POST", "/api/v1/creditors/aguas-andinas/debtors/C-1001/portal-link"),
]


@pytest.mark.slow
@FUZZ
@given(operation=st.sampled_from(API_WRITES), payload=json_values, authorised=st.booleans())
def test_api_writes_with_arbitrary_json(fuzz_client, db, operation, payload, authorised):
    method, path = operation
    headers = {"Authorization": f"Bearer {TEST_API_TOKEN if authorised else 'nope'}"}
    check(db, fuzz_client, lambda client: client.open(path, method=method, json=payload, headers=headers))
