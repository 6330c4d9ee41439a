"""What both Twilio adapters share: signature checks, the shared status route, text splitting, the real SDK's
client pointed at a stand-in API, and how Twilio's errors map to TransientError / PermanentError."""

from __future__ import annotations

import socket
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from bot.domain import (
    BadPayload,
    DeliveryStatus,
    InvalidSignature,
    OutboundMessage,
    PermanentError,
    TransientError,
    WebhookRequest,
)
from channels.twilio_common import make_client, parse_status, split_text, verify_signature
from channels.twilio_sms import TwilioSms
from channels.twilio_whatsapp import TwilioWhatsApp
from tests.channels.twilio_helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    MESSAGES_PATH,
    PUBLIC_URL,
    payload,
    twilio_settings,
)
from tests.channels.twilio_helpers import signed as signed_request
from tests.standin import StandIn

STATUS_URL = PUBLIC_URL + "/webhooks/twilio/status"


def signed(form: dict[str, str], url: str = STATUS_URL, *, signed_url: str | None = None) -> WebhookRequest:
    return signed_request(form, url, signed_url=signed_url)


HELLO = OutboundMessage(channel="sms", recipient="+56961234567", text="Hola Ana")


@pytest.fixture
def sms(standin: StandIn) -> TwilioSms:
    return TwilioSms(twilio_settings(standin.url))


def twilio_error(status: int, code: int) -> dict[str, Any]:
    """Twilio's classic JSON error body."""
    return {
        "code": code,
        "message": "The request could not be completed",
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


# --- signatures ---------------------------------------------------------------------------------------------


def test_a_correct_signature_passes(data_dir: Path) -> None:
    verify_signature(signed(payload(data_dir, "status_sms_delivered.json")), AUTH_TOKEN)


def test_the_signature_header_is_found_in_any_case(data_dir: Path) -> None:
    request = signed(payload(data_dir, "status_sms_delivered.json"))
    lowered = WebhookRequest(
        request.url,
        request.method,
        {"x-twilio-signature": request.headers["X-Twilio-Signature"]},
        request.body,
        request.form,
    )
    verify_signature(lowered, AUTH_TOKEN)


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Twilio-Signature": ""}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}],
    ids=["missing", "empty", "wrong"],
)
def test_missing_or_wrong_signatures_are_refused(data_dir: Path, headers: dict[str, str]) -> None:
    form = payload(data_dir, "status_sms_delivered.json")
    with pytest.raises(InvalidSignature):
        verify_signature(WebhookRequest(STATUS_URL, "POST", headers, b"", form), AUTH_TOKEN)


def test_a_signature_for_another_url_is_refused(data_dir: Path) -> None:
    request = signed(payload(data_dir, "status_sms_delivered.json"), signed_url=PUBLIC_URL + "/webhooks/twilio/sms")
    with pytest.raises(InvalidSignature):
        verify_signature(request, AUTH_TOKEN)


def test_a_form_changed_after_signing_is_refused(data_dir: Path) -> None:
    request = signed(payload(data_dir, "status_sms_delivered.json"))
    tampered = WebhookRequest(
        request.url, "POST", request.headers, request.body, request.form | {"MessageStatus": "failed"}
    )
    with pytest.raises(InvalidSignature):
        verify_signature(tampered, AUTH_TOKEN)


def test_a_signature_made_with_another_token_is_refused(data_dir: Path) -> None:
    form = payload(data_dir, "status_sms_delivered.json")
    signature = RequestValidator("someone-elses-token").compute_signature(STATUS_URL, form)
    request = WebhookRequest(STATUS_URL, "POST", {"X-Twilio-Signature": signature}, b"", form)
    with pytest.raises(InvalidSignature):
        verify_signature(request, AUTH_TOKEN)


def test_an_empty_auth_token_verifies_nothing(data_dir: Path) -> None:
    form = payload(data_dir, "status_sms_delivered.json")
    signature = RequestValidator("").compute_signature(STATUS_URL, form)
    with pytest.raises(InvalidSignature):
        verify_signature(WebhookRequest(STATUS_URL, "POST", {"X-Twilio-Signature": signature}, b"", form), "")


PORTED_URL = "https://cobrabot.example:8443/webhooks/twilio/status"
URL_SHAPES = [
    STATUS_URL,
    PORTED_URL,
    "https://cobrabot.example:443/webhooks/twilio/status",
    "https://cobrabot.example:9443/webhooks/twilio/status",
    STATUS_URL + "?channel=sms",
    STATUS_URL + "?",  # not what urlparse gives back: verified by the SDK's `validate` alone
    "http://cobrabot.example/webhooks/twilio/status",
    "http://cobrabot.example:80/webhooks/twilio/status",
]


@pytest.mark.parametrize(
    "signed_url", [PORTED_URL, STATUS_URL], ids=["signed with the port", "signed without the port"]
)
def test_a_url_with_an_explicit_port_verifies_signed_either_way(data_dir: Path, signed_url: str) -> None:
    # Twilio is inconsistent about the port in what it signs; the SDK accepts both, and so do we.
    verify_signature(
        signed(payload(data_dir, "status_sms_delivered.json"), PORTED_URL, signed_url=signed_url), AUTH_TOKEN
    )


@pytest.mark.parametrize("url", URL_SHAPES)
@pytest.mark.parametrize("signed_url", URL_SHAPES)
def test_exactly_what_the_sdk_validates_verifies(data_dir: Path, url: str, signed_url: str) -> None:
    request = signed(payload(data_dir, "status_sms_delivered.json"), url, signed_url=signed_url)
    sdk = RequestValidator(AUTH_TOKEN).validate(url, request.form, request.headers["X-Twilio-Signature"])
    try:
        verify_signature(request, AUTH_TOKEN)
    except InvalidSignature:
        assert not sdk
    else:
        assert sdk


def test_a_genuine_request_costs_one_hmac(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request = signed(payload(data_dir, "status_sms_delivered.json"))
    computed: list[str] = []
    original = RequestValidator.compute_signature
    monkeypatch.setattr(
        RequestValidator, "compute_signature", lambda self, uri, *a: computed.append(uri) or original(self, uri, *a)
    )
    verify_signature(request, AUTH_TOKEN)
    assert computed == [STATUS_URL]


# --- the shared status route ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("status_sms_delivered.json", DeliveryStatus("sms", "SMa1b2c3d4e5f60718293a4b5c6d7e8f90", "delivered")),
        (
            "status_sms_undelivered.json",
            DeliveryStatus("sms", "SMb2c3d4e5f60718293a4b5c6d7e8f90a1", "undelivered", "30003"),
        ),
        ("status_whatsapp_read.json", DeliveryStatus("whatsapp", "SMc3d4e5f60718293a4b5c6d7e8f90a1b2", "read")),
        (
            "status_whatsapp_failed.json",
            DeliveryStatus("whatsapp", "SMd4e5f60718293a4b5c6d7e8f90a1b2c3", "failed", "63016"),
        ),
    ],
)
def test_status_callbacks_name_their_channel(data_dir: Path, fixture: str, expected: DeliveryStatus) -> None:
    parsed = parse_status(signed(payload(data_dir, fixture)), AUTH_TOKEN)
    assert parsed.statuses == (expected,)
    assert parsed.messages == ()


def test_a_status_callback_needs_a_valid_signature(data_dir: Path) -> None:
    request = signed(payload(data_dir, "status_whatsapp_read.json"), signed_url=PUBLIC_URL + "/webhooks/twilio/sms")
    with pytest.raises(InvalidSignature):
        parse_status(request, AUTH_TOKEN)


@pytest.mark.parametrize("missing", ["MessageSid", "MessageStatus"])
def test_a_status_callback_without_sid_or_status_is_a_bad_payload(data_dir: Path, missing: str) -> None:
    form = payload(data_dir, "status_sms_delivered.json")
    del form[missing]
    with pytest.raises(BadPayload, match=missing):
        parse_status(signed(form), AUTH_TOKEN)


# --- splitting long text --------------------------------------------------------------------------------------


def test_text_within_the_limit_is_one_part() -> None:
    assert split_text("Hola Ana", 1600) == ["Hola Ana"]
    assert split_text("", 1600) == [""]


def test_long_text_is_cut_between_words() -> None:
    words = [f"palabra{n}" for n in range(600)]
    parts = split_text(" ".join(words), 1600)
    assert len(parts) == 5
    assert all(len(part) <= 1600 for part in parts)
    assert " ".join(parts).split(" ") == words


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert split_text("x" * 3300, 1600) == ["x" * 1600, "x" * 1600, "x" * 100]


def test_emoji_count_twice_as_twilio_counts_them() -> None:
    parts = split_text("🙂" * 1000, 1600)
    assert [len(part) for part in parts] == [800, 200]


def test_newlines_are_cut_points_too() -> None:
    assert split_text("uno dos\ntres", 9) == ["uno dos", "tres"]


# --- construction and the client ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "unset", "named"),
    [
        (TwilioSms, "twilio_auth_token", "TWILIO_AUTH_TOKEN"),
        (TwilioSms, "twilio_account_sid", "TWILIO_ACCOUNT_SID"),
        (TwilioSms, "twilio_sms_from", "COBRABOT_TWILIO_SMS_FROM"),
        (TwilioWhatsApp, "twilio_whatsapp_from", "COBRABOT_TWILIO_WHATSAPP_FROM"),
    ],
)
def test_missing_credentials_fail_construction_naming_the_variable(
    adapter: type[TwilioSms | TwilioWhatsApp], unset: str, named: str
) -> None:
    settings = twilio_settings(None).model_copy(update={unset: None})
    with pytest.raises(ValueError, match=named):
        adapter(settings)


def test_without_an_override_the_client_talks_to_twilio() -> None:
    assert make_client(ACCOUNT_SID, AUTH_TOKEN, None, 5.0).api.base_url == "https://api.twilio.com"


def test_the_override_beats_an_edge_from_the_environment(monkeypatch: pytest.MonkeyPatch, standin: StandIn) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    standin.respond("POST", MESSAGES_PATH, 201, {"sid": "SM1", "status": "queued"})
    TwilioSms(twilio_settings(standin.url)).send(HELLO)
    assert [request.path for request in standin.requests] == [MESSAGES_PATH]


def test_send_authenticates_with_the_account_credentials(sms: TwilioSms, standin: StandIn) -> None:
    standin.respond("POST", MESSAGES_PATH, 201, {"sid": "SM1", "status": "queued"})
    sms.send(HELLO)
    credentials = b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert standin.requests[0].headers["Authorization"] == f"Basic {credentials}"


# --- error mapping --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, 21610, "opted_out"),
        (400, 63016, "outside_window"),
        (400, 21211, "unreachable"),
        (400, 21614, "unreachable"),
        (400, 21408, "unreachable"),
        (400, 21612, "unreachable"),
        (400, 63003, "unreachable"),
        (400, 21617, "21617"),
        (401, 20003, "20003"),
    ],
)
def test_twilio_error_codes_map_to_permanent_reasons(
    sms: TwilioSms, standin: StandIn, status: int, code: int, reason: str
) -> None:
    standin.respond("POST", MESSAGES_PATH, status, twilio_error(status, code))
    with pytest.raises(PermanentError) as raised:
        sms.send(HELLO)
    assert raised.value.code == reason
    assert "+56961234567" not in str(raised.value)


def test_problem_details_errors_map_the_same_way(sms: TwilioSms, standin: StandIn) -> None:
    problem = {
        "type": "https://www.twilio.com/docs/errors/21610",
        "title": "Unsubscribed recipient",
        "status": 400,
        "code": 21610,
    }
    standin.respond("POST", MESSAGES_PATH, 400, problem)
    with pytest.raises(PermanentError) as raised:
        sms.send(HELLO)
    assert raised.value.code == "opted_out"


def test_too_many_requests_is_transient_with_retry_after(sms: TwilioSms, standin: StandIn) -> None:
    standin.respond("POST", MESSAGES_PATH, 429, twilio_error(429, 20429), **{"Retry-After": "7"})
    with pytest.raises(TransientError) as raised:
        sms.send(HELLO)
    assert raised.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(sms: TwilioSms, standin: StandIn, status: int) -> None:
    standin.respond("POST", MESSAGES_PATH, status, b"<html>Service Unavailable</html>", **{"Content-Type": "text/html"})
    with pytest.raises(TransientError) as raised:
        sms.send(HELLO)
    assert raised.value.retry_after is None


def test_an_http_date_retry_after_is_left_to_dispatch(sms: TwilioSms, standin: StandIn) -> None:
    standin.respond(
        "POST", MESSAGES_PATH, 503, twilio_error(503, 20500), **{"Retry-After": "Wed, 25 Nov 2026 15:01:00 GMT"}
    )
    with pytest.raises(TransientError) as raised:
        sms.send(HELLO)
    assert raised.value.retry_after is None


def test_connection_refused_is_transient(unused_port: int) -> None:
    sms = TwilioSms(twilio_settings(f"http://127.0.0.1:{unused_port}"))
    with pytest.raises(TransientError, match="unreachable"):
        sms.send(HELLO)


def test_a_timeout_is_transient(silent_server: str) -> None:
    sms = TwilioSms(twilio_settings(silent_server), timeout=0.2)
    with pytest.raises(TransientError, match="Timeout"):
        sms.send(HELLO)
