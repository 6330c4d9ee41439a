"""TwilioWhatsApp with the real twilio SDK: signed webhooks in (text, media, profile), free text and approved
templates out to a stand-in Twilio API."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from bot.domain import (
    BadPayload,
    Button,
    DeliveryStatus,
    InvalidSignature,
    OutboundMessage,
    Parsed,
    PermanentError,
    WebhookRequest,
)
from bot.ports import Channel
from channels.twilio_whatsapp import TwilioWhatsApp
from tests.channels.twilio_helpers import (
    MESSAGES_PATH,
    PUBLIC_URL,
    payload,
    twilio_settings,
)
from tests.channels.twilio_helpers import signed as signed_request
from tests.standin import StandIn

WEBHOOK_URL = PUBLIC_URL + "/webhooks/twilio/whatsapp"


def signed(form: dict[str, str], *, signed_url: str | None = None) -> WebhookRequest:
    return signed_request(form, WEBHOOK_URL, signed_url=signed_url)


TO_ANA = {"channel": "whatsapp", "recipient": "+56961234567"}


@pytest.fixture
def whatsapp(standin: StandIn) -> TwilioWhatsApp:
    return TwilioWhatsApp(twilio_settings(standin.url))


@pytest.fixture
def created(data_dir: Path) -> dict[str, object]:
    answer = json.loads((data_dir / "twilio" / "message_created.json").read_text())
    return answer | {"from": "whatsapp:+14155238886", "to": "whatsapp:+56961234567"}


def test_the_adapter_is_a_channel_named_whatsapp(whatsapp: TwilioWhatsApp) -> None:
    assert isinstance(whatsapp, Channel)
    assert whatsapp.name == "whatsapp"
    capabilities = whatsapp.capabilities
    assert (capabilities.max_length, capabilities.buttons) == (1600, False)
    assert capabilities.template_outside_window and capabilities.media


# --- inbound --------------------------------------------------------------------------------------------------


def test_an_inbound_text_carries_the_phone_and_profile(whatsapp: TwilioWhatsApp, data_dir: Path) -> None:
    (message,) = whatsapp.parse(signed(payload(data_dir, "whatsapp_inbound_text.json"))).messages
    assert (message.channel, message.sender, message.text) == ("whatsapp", "+56961234567", "¿Cuánto debo?")
    assert message.provider_message_id == "SM9b8a7c6d5e4f30211f2e3d4c5b6a7980"
    assert message.media_urls == ()
    assert message.metadata == {"ProfileName": "Ana María", "WaId": "56961234567", "NumMedia": 0}


def test_a_media_only_message_lists_the_urls_without_fetching_them(
    whatsapp: TwilioWhatsApp, standin: StandIn, data_dir: Path
) -> None:
    form = payload(data_dir, "whatsapp_inbound_media.json")
    # Pointed at the stand-in, a fetch would show up among its requests.
    form |= {"MediaUrl0": standin.url + "/media/ME0", "MediaUrl1": standin.url + "/media/ME1"}
    (message,) = whatsapp.parse(signed(form)).messages
    assert message.text == ""
    assert message.media_urls == (standin.url + "/media/ME0", standin.url + "/media/ME1")
    assert message.metadata["NumMedia"] == 2
    assert standin.requests == []


def test_media_urls_keep_their_index_order(whatsapp: TwilioWhatsApp, data_dir: Path) -> None:
    form = payload(data_dir, "whatsapp_inbound_media.json")
    urls = {f"MediaUrl{index}": f"https://media.example/{index}" for index in (10, 2, 0, 1)}
    (message,) = whatsapp.parse(signed(form | urls | {"NumMedia": "4"})).messages
    assert message.media_urls == tuple(f"https://media.example/{index}" for index in (0, 1, 2, 10))


def test_status_callbacks_on_the_whatsapp_webhook(whatsapp: TwilioWhatsApp, data_dir: Path) -> None:
    parsed = whatsapp.parse(signed(payload(data_dir, "status_whatsapp_failed.json")))
    assert parsed == Parsed(
        statuses=(DeliveryStatus("whatsapp", "SMd4e5f60718293a4b5c6d7e8f90a1b2c3", "failed", "63016"),)
    )


def test_a_signature_for_the_sms_url_is_refused(whatsapp: TwilioWhatsApp, data_dir: Path) -> None:
    request = signed(payload(data_dir, "whatsapp_inbound_text.json"), signed_url=PUBLIC_URL + "/webhooks/twilio/sms")
    with pytest.raises(InvalidSignature):
        whatsapp.parse(request)


def test_a_missing_signature_is_refused(whatsapp: TwilioWhatsApp, data_dir: Path) -> None:
    form = payload(data_dir, "whatsapp_inbound_text.json")
    with pytest.raises(InvalidSignature):
        whatsapp.parse(WebhookRequest(WEBHOOK_URL, "POST", {}, urlencode(form).encode(), form))


@pytest.mark.parametrize(
    "change",
    [{"From": "+56961234567"}, {"From": "messenger:1234567890"}, {"MessageSid": ""}],
    ids=["sms-sender", "other-channel", "no-sid"],
)
def test_senders_from_other_channels_are_bad_payloads(
    whatsapp: TwilioWhatsApp, data_dir: Path, change: dict[str, str]
) -> None:
    form = {key: value for key, value in (payload(data_dir, "whatsapp_inbound_text.json") | change).items() if value}
    with pytest.raises(BadPayload):
        whatsapp.parse(signed(form))


# --- outbound -------------------------------------------------------------------------------------------------


def test_free_text_goes_between_whatsapp_addresses(
    whatsapp: TwilioWhatsApp, standin: StandIn, created: dict[str, object]
) -> None:
    standin.respond("POST", MESSAGES_PATH, 201, created)
    result = whatsapp.send(OutboundMessage(**TO_ANA, text="Hola Ana"))
    assert result.provider_message_id == "SM5e6f70819a2b3c4d5e6f708192a3b4c5"
    (request,) = standin.requests
    assert request.path == MESSAGES_PATH
    assert request.form == {
        "To": ["whatsapp:+56961234567"],
        "From": ["whatsapp:+14155238886"],
        "Body": ["Hola Ana"],
        "StatusCallback": [PUBLIC_URL + "/webhooks/twilio/status"],
    }


def test_a_sender_configured_with_its_prefix_is_not_prefixed_twice(
    standin: StandIn, created: dict[str, object]
) -> None:
    settings = twilio_settings(standin.url).model_copy(update={"twilio_whatsapp_from": "whatsapp:+14155238886"})
    standin.respond("POST", MESSAGES_PATH, 201, created)
    TwilioWhatsApp(settings).send(OutboundMessage(**TO_ANA, text="Hola Ana"))
    assert standin.requests[0].form["From"] == ["whatsapp:+14155238886"]


def test_a_template_is_sent_by_content_sid_with_its_variables(
    whatsapp: TwilioWhatsApp, standin: StandIn, created: dict[str, object]
) -> None:
    standin.respond("POST", MESSAGES_PATH, 201, created)
    metadata = {"content_sid": "HX0a1b2c3d4e5f60718293a4b5c6d7e8f9", "content_variables": {"1": "Ana", "2": 45990}}
    whatsapp.send(OutboundMessage(**TO_ANA, text="Hola Ana, tu cuenta...", metadata=metadata))
    form = standin.requests[0].form
    assert "Body" not in form
    assert form["ContentSid"] == ["HX0a1b2c3d4e5f60718293a4b5c6d7e8f9"]
    assert json.loads(form["ContentVariables"][0]) == {"1": "Ana", "2": "45990"}
    assert form["To"] == ["whatsapp:+56961234567"]


def test_buttons_become_numbered_lines(whatsapp: TwilioWhatsApp, standin: StandIn, created: dict[str, object]) -> None:
    standin.respond("POST", MESSAGES_PATH, 201, created)
    buttons = (Button("Pagar ahora", "pay_now"), Button("Hablar con alguien", "human"))
    whatsapp.send(OutboundMessage(**TO_ANA, text="¿Cómo seguimos?", buttons=buttons))
    assert standin.requests[0].form["Body"] == ["¿Cómo seguimos?\n\n1. Pagar ahora\n2. Hablar con alguien"]


def test_text_past_twilios_body_limit_is_split(
    whatsapp: TwilioWhatsApp, standin: StandIn, created: dict[str, object]
) -> None:
    standin.respond("POST", MESSAGES_PATH, 201, created, once=False)
    whatsapp.send(OutboundMessage(**TO_ANA, text=" ".join(["detalle"] * 300)))
    assert [len(request.form["Body"][0]) for request in standin.requests] == [1599, 799]


@pytest.mark.parametrize(("code", "reason"), [(63016, "outside_window"), (63003, "unreachable")])
def test_whatsapp_refusals_are_permanent(whatsapp: TwilioWhatsApp, standin: StandIn, code: int, reason: str) -> None:
    standin.respond("POST", MESSAGES_PATH, 400, {"code": code, "message": "refused", "status": 400})
    with pytest.raises(PermanentError) as raised:
        whatsapp.send(OutboundMessage(**TO_ANA, text="Hola Ana"))
    assert raised.value.code == reason
