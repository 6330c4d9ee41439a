"""TwilioSms with the real twilio SDK: signed webhooks in, Messages.create out to a stand-in Twilio API."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from bot.domain import (
    BadPayload,
    Button,
    DeliveryStatus,
    InboundMessage,
    InvalidSignature,
    OutboundMessage,
    Parsed,
    WebhookRequest,
)
from bot.ports import Channel, ChannelRegistry
from channels.twilio_sms import TwilioSms
from tests.channels.twilio_helpers import (
    MESSAGES_PATH,
    PUBLIC_URL,
    payload,
    twilio_settings,
)
from tests.channels.twilio_helpers import signed as signed_request
from tests.standin import StandIn

WEBHOOK_URL = PUBLIC_URL + "/webhooks/twilio/sms"


def signed(form: dict[str, str], *, signed_url: str | None = None) -> WebhookRequest:
    return signed_request(form, WEBHOOK_URL, signed_url=signed_url)


@pytest.fixture
def sms(standin: StandIn) -> TwilioSms:
    return TwilioSms(twilio_settings(standin.url))


@pytest.fixture
def created(data_dir: Path) -> dict[str, object]:
    """Twilio's answer to Messages.create, as recorded."""
    return json.loads((data_dir / "twilio" / "message_created.json").read_text())


def test_the_adapter_is_a_channel_named_sms(sms: TwilioSms) -> None:
    registry = ChannelRegistry()
    registry.register(sms)
    assert isinstance(sms, Channel)
    assert registry.get("sms") is sms
    assert sms.capabilities.max_length == 1600
    assert not sms.capabilities.buttons


# --- inbound --------------------------------------------------------------------------------------------------


def test_an_inbound_sms_becomes_one_message(sms: TwilioSms, data_dir: Path) -> None:
    parsed = sms.parse(signed(payload(data_dir, "sms_inbound.json")))
    (message,) = parsed.messages
    assert message == InboundMessage(
        channel="sms",
        sender="+56961234567",
        text="Hola, quiero pagar mi cuenta",
        provider_message_id="SM3f1c2b9a8e7d6c5b4a39281706f5e4d3",
        received_at=message.received_at,
        metadata={"NumMedia": 0},
    )
    assert parsed.statuses == ()


def test_a_status_callback_on_the_sms_webhook_is_a_status(sms: TwilioSms, data_dir: Path) -> None:
    parsed = sms.parse(signed(payload(data_dir, "status_sms_undelivered.json")))
    assert parsed == Parsed(
        statuses=(DeliveryStatus("sms", "SMb2c3d4e5f60718293a4b5c6d7e8f90a1", "undelivered", "30003"),)
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}],
    ids=["missing", "wrong"],
)
def test_unsigned_or_wrongly_signed_webhooks_are_refused(
    sms: TwilioSms, data_dir: Path, headers: dict[str, str]
) -> None:
    form = payload(data_dir, "sms_inbound.json")
    with pytest.raises(InvalidSignature):
        sms.parse(WebhookRequest(WEBHOOK_URL, "POST", headers, urlencode(form).encode(), form))


def test_a_signature_for_the_whatsapp_url_is_refused(sms: TwilioSms, data_dir: Path) -> None:
    request = signed(payload(data_dir, "sms_inbound.json"), signed_url=PUBLIC_URL + "/webhooks/twilio/whatsapp")
    with pytest.raises(InvalidSignature):
        sms.parse(request)


def test_the_signature_is_checked_before_the_form_is_read(sms: TwilioSms) -> None:
    request = WebhookRequest(WEBHOOK_URL, "POST", {"X-Twilio-Signature": "bm9wZQ=="}, b"x=1", {"x": "1"})
    with pytest.raises(InvalidSignature):
        sms.parse(request)


@pytest.mark.parametrize(
    "change",
    [
        {"MessageSid": ""},
        {"From": ""},
        {"From": "whatsapp:+56961234567"},
        {"From": "56961234567"},
        {"From": "+56 9 6123 4567"},
        {"NumMedia": "two"},
    ],
    ids=["no-sid", "no-from", "whatsapp-sender", "no-plus", "spaces", "num-media"],
)
def test_malformed_forms_are_bad_payloads(sms: TwilioSms, data_dir: Path, change: dict[str, str]) -> None:
    form = {key: value for key, value in (payload(data_dir, "sms_inbound.json") | change).items() if value}
    with pytest.raises(BadPayload):
        sms.parse(signed(form))


# --- outbound -------------------------------------------------------------------------------------------------


def test_send_creates_a_message_with_a_status_callback(
    sms: TwilioSms, standin: StandIn, created: dict[str, object]
) -> None:
    standin.respond("POST", MESSAGES_PATH, 201, created)
    text = "Hola Ana, tu cuenta vence el 5 de diciembre."
    result = sms.send(OutboundMessage(channel="sms", recipient="+56961234567", text=text))
    assert (result.provider_message_id, result.status) == ("SM5e6f70819a2b3c4d5e6f708192a3b4c5", "queued")
    (request,) = standin.requests
    assert (request.method, request.path) == ("POST", MESSAGES_PATH)
    assert request.form == {
        "To": ["+56961234567"],
        "From": ["+56229381234"],
        "Body": [text],
        "StatusCallback": [PUBLIC_URL + "/webhooks/twilio/status"],
    }


def test_buttons_become_numbered_lines(sms: TwilioSms, standin: StandIn, created: dict[str, object]) -> None:
    standin.respond("POST", MESSAGES_PATH, 201, created)
    buttons = (Button("Pagar ahora", "pay_now"), Button("Pedir un plan", "request_plan"))
    sms.send(OutboundMessage(channel="sms", recipient="+56961234567", text="¿Qué prefieres?", buttons=buttons))
    assert standin.requests[0].form["Body"] == ["¿Qué prefieres?\n\n1. Pagar ahora\n2. Pedir un plan"]


def test_a_long_text_goes_as_several_messages(sms: TwilioSms, standin: StandIn, created: dict[str, object]) -> None:
    for sid in ("SM01", "SM02", "SM03"):
        standin.respond("POST", MESSAGES_PATH, 201, created | {"sid": sid})
    words = [f"cuota{n}" for n in range(500)]
    result = sms.send(OutboundMessage(channel="sms", recipient="+56961234567", text=" ".join(words)))
    assert result.provider_message_id == "SM01"
    bodies = [request.form["Body"][0] for request in standin.requests]
    assert len(bodies) == 3
    assert all(len(body) <= 1600 for body in bodies)
    assert " ".join(bodies).split(" ") == words
