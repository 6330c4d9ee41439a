"""The Telegram adapter with the real python-telegram-bot: recorded updates in, the Bot API stand-in out."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings, load_settings
from bot.domain import (
    BadPayload,
    Button,
    InvalidSignature,
    OutboundMessage,
    Parsed,
    PermanentError,
    TransientError,
    WebhookRequest,
)
from bot.ports import Channel
from channels.telegram import SECRET_HEADER, TelegramChannel, deep_link
from tests.conftest import FixedClock
from tests.standin import Recorded, StandIn

TOKEN = "6000000001:AAH-test-token_for-standin"
SECRET = "webhook-secret-0123456789"
CHAT_ID = "7001234567"
API = f"/bot{TOKEN}"


def telegram_settings(api_url: str, **overrides: Any) -> Settings:
    values = {"telegram_bot_token": TOKEN, "telegram_secret": SECRET, "telegram_api_url": api_url} | overrides
    return load_settings(**values)


@pytest.fixture
def telegram_data(data_dir: Path) -> Path:
    return data_dir / "telegram"


@pytest.fixture
def bot_api(standin: StandIn, telegram_data: Path) -> StandIn:
    """The stand-in answering getMe (PTB's Bot.initialize) for every test."""
    standin.respond("POST", f"{API}/getMe", 200, _load(telegram_data / "api_get_me.json"), once=False)
    return standin


@pytest.fixture
def channel(clock: FixedClock) -> TelegramChannel:
    """For parse(), which never touches the network: the API URL points nowhere."""
    return TelegramChannel(telegram_settings("http://127.0.0.1:9"), clock=clock)


@pytest.fixture
def api_channel(bot_api: StandIn) -> Iterator[TelegramChannel]:
    adapter = TelegramChannel(telegram_settings(bot_api.url))
    yield adapter
    adapter.close()


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _webhook(body: bytes, secret: str | None = SECRET) -> WebhookRequest:
    headers = {"Content-Type": "application/json"} | ({SECRET_HEADER: secret} if secret is not None else {})
    return WebhookRequest(url="https://cobrabot.example/webhooks/telegram", method="POST", headers=headers, body=body)


def _update(telegram_data: Path, name: str) -> WebhookRequest:
    return _webhook((telegram_data / f"{name}.json").read_bytes())


def _sent(standin: StandIn) -> list[Recorded]:
    return [request for request in standin.requests if request.path == f"{API}/sendMessage"]


def _fields(request: Recorded) -> dict[str, str]:
    """PTB posts sendMessage form-encoded, with reply_markup as a JSON string."""
    return {name: values[0] for name, values in request.form.items()}


def _reply(text: str = "Tu saldo es $45.990.", buttons: tuple[Button, ...] = ()) -> OutboundMessage:
    return OutboundMessage(channel="telegram", recipient=CHAT_ID, text=text, buttons=buttons)


def _telegram_error(code: int, description: str, **parameters: int) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    return body | ({"parameters": parameters} if parameters else {})


def test_is_a_channel(channel: TelegramChannel) -> None:
    assert isinstance(channel, Channel)
    assert channel.name == "telegram"
    assert (channel.capabilities.max_length, channel.capabilities.buttons) == (4096, True)
    assert channel.capabilities.max_buttons == 8


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [({"telegram_bot_token": None}, "TELEGRAM_BOT_TOKEN"), ({"telegram_secret": None}, "COBRABOT_TELEGRAM_SECRET")],
)
def test_refuses_to_run_without_token_or_secret(overrides: dict[str, None], variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        TelegramChannel(telegram_settings("http://127.0.0.1:9", **overrides))


def test_text_message(channel: TelegramChannel, telegram_data: Path) -> None:
    parsed = channel.parse(_update(telegram_data, "text_message"))

    (message,) = parsed.messages
    assert (message.channel, message.sender, message.text) == ("telegram", CHAT_ID, "¿Cuánto debo?")
    assert message.provider_message_id == "815200001"
    assert message.received_at == datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    assert message.metadata == {"username": "anaperez"}
    assert parsed.statuses == ()


def test_secret_header_name_is_case_insensitive(channel: TelegramChannel, telegram_data: Path) -> None:
    body = (telegram_data / "text_message.json").read_bytes()
    request = WebhookRequest(
        url="https://x/webhooks/telegram", method="POST", headers={SECRET_HEADER.lower(): SECRET}, body=body
    )

    assert len(channel.parse(request).messages) == 1


def test_start_with_deep_link_payload(channel: TelegramChannel, telegram_data: Path) -> None:
    (message,) = channel.parse(_update(telegram_data, "start_deep_link")).messages

    assert message.text == "/start eyJkIjo0Mn0_Xk3q-9Zt"
    assert message.metadata["start_payload"] == "eyJkIjo0Mn0_Xk3q-9Zt"


@pytest.mark.parametrize("text", ["/start", "/startnow abc", "please /start abc"])
def test_no_start_payload_unless_start_command_has_one(
    channel: TelegramChannel, telegram_data: Path, text: str
) -> None:
    update = _load(telegram_data / "start_deep_link.json")
    update["message"]["text"] = text

    (message,) = channel.parse(_webhook(json.dumps(update).encode())).messages

    assert "start_payload" not in message.metadata


def test_shared_own_contact(channel: TelegramChannel, telegram_data: Path) -> None:
    (message,) = channel.parse(_update(telegram_data, "contact_own")).messages

    assert message.sender == CHAT_ID
    assert message.text == ""
    assert message.metadata == {"contact_phone": "+56961234567", "contact_user_matches": True}


def test_shared_someone_elses_contact(channel: TelegramChannel, telegram_data: Path) -> None:
    (message,) = channel.parse(_update(telegram_data, "contact_other")).messages

    assert message.metadata == {"contact_phone": "+56987654321", "contact_user_matches": False}


def test_contact_with_invalid_number_keeps_only_the_match_flag(channel: TelegramChannel, telegram_data: Path) -> None:
    update = _load(telegram_data / "contact_own.json")
    update["message"]["contact"]["phone_number"] = "123"

    (message,) = channel.parse(_webhook(json.dumps(update).encode())).messages

    assert message.metadata == {"contact_user_matches": True}


def test_button_press(channel: TelegramChannel, telegram_data: Path, clock: FixedClock) -> None:
    (message,) = channel.parse(_update(telegram_data, "callback_query")).messages

    assert (message.sender, message.text) == (CHAT_ID, "request_plan")
    assert message.provider_message_id == "815200005"
    assert message.received_at == clock.now
    assert message.metadata == {"button": True, "callback_query_id": "4382bfdwdsb323b2d9", "username": "anaperez"}


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", SECRET + "x", "sécret"])
def test_missing_or_wrong_secret(channel: TelegramChannel, telegram_data: Path, secret: str | None) -> None:
    body = (telegram_data / "text_message.json").read_bytes()

    with pytest.raises(InvalidSignature):
        channel.parse(_webhook(body, secret=secret))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"update"',
        b'{"message": {"text": "hi"}}',
        b'{"update_id": "815200001"}',
        b'{"update_id": true}',
        b'{"update_id": 1, "message": {"message_id": 1}}',
        b'{"update_id": 1, "message": "hi"}',
    ],
)
def test_bad_payload(channel: TelegramChannel, body: bytes) -> None:
    with pytest.raises(BadPayload):
        channel.parse(_webhook(body))


# PTB itself warns while reading message_auto_delete_time as int seconds (its v22.2 deprecation).
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
@pytest.mark.parametrize("name", ["edited_message", "sticker", "service_message", "group_message"])
def test_updates_with_nothing_to_answer(channel: TelegramChannel, telegram_data: Path, name: str) -> None:
    assert channel.parse(_update(telegram_data, name)) == Parsed()


def test_button_press_in_a_group_is_ignored(channel: TelegramChannel, telegram_data: Path) -> None:
    update = _load(telegram_data / "callback_query.json")
    update["callback_query"]["message"]["chat"] = {"id": -1001987654321, "title": "Familia", "type": "supergroup"}

    assert channel.parse(_webhook(json.dumps(update).encode())) == Parsed()


def test_send_plain_text(api_channel: TelegramChannel, bot_api: StandIn, telegram_data: Path) -> None:
    bot_api.respond("POST", f"{API}/sendMessage", 200, _load(telegram_data / "api_send_message.json"))

    result = api_channel.send(_reply())

    assert result.provider_message_id == f"{CHAT_ID}:202"
    (request,) = _sent(bot_api)
    assert _fields(request) == {"chat_id": CHAT_ID, "text": "Tu saldo es $45.990."}


def test_send_with_buttons(api_channel: TelegramChannel, bot_api: StandIn, telegram_data: Path) -> None:
    bot_api.respond("POST", f"{API}/sendMessage", 200, _load(telegram_data / "api_send_message.json"))
    buttons = (Button("Pagar ahora", "pay_now"), Button("Plan de pagos", "request_plan"))

    api_channel.send(_reply("¿Cómo quieres pagar?", buttons))

    fields = _fields(_sent(bot_api)[0])
    assert fields["text"] == "¿Cómo quieres pagar?"
    assert json.loads(fields["reply_markup"]) == {
        "inline_keyboard": [
            [{"text": "Pagar ahora", "callback_data": "pay_now"}],
            [{"text": "Plan de pagos", "callback_data": "request_plan"}],
        ]
    }


@pytest.mark.parametrize(
    "buttons",
    [
        tuple(Button(f"Opción {n}", f"option_{n}") for n in range(1, 10)),
        (Button("Pagar", "x" * 65),),
    ],
    ids=["more-than-8", "payload-over-64-bytes"],
)
def test_buttons_that_cannot_be_a_keyboard_become_numbered_lines(
    api_channel: TelegramChannel, bot_api: StandIn, telegram_data: Path, buttons: tuple[Button, ...]
) -> None:
    bot_api.respond("POST", f"{API}/sendMessage", 200, _load(telegram_data / "api_send_message.json"))

    api_channel.send(_reply("Elige:", buttons))

    fields = _fields(_sent(bot_api)[0])
    assert "reply_markup" not in fields
    assert fields["text"].startswith("Elige:\n\n1. ")
    assert fields["text"].count("\n") == len(buttons) + 1


def test_bot_is_initialized_once_and_reused(
    api_channel: TelegramChannel, bot_api: StandIn, telegram_data: Path
) -> None:
    bot_api.respond("POST", f"{API}/sendMessage", 200, _load(telegram_data / "api_send_message.json"), once=False)

    for _ in range(3):
        api_channel.send(_reply())

    assert [request.path.rsplit("/", 1)[1] for request in bot_api.requests] == ["getMe"] + ["sendMessage"] * 3


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # int retry_after, see _seconds()
def test_flood_limit_is_transient_with_retry_after(api_channel: TelegramChannel, bot_api: StandIn) -> None:
    error = _telegram_error(429, "Too Many Requests: retry after 3", retry_after=3)
    bot_api.respond("POST", f"{API}/sendMessage", 429, error)

    with pytest.raises(TransientError) as raised:
        api_channel.send(_reply())

    assert raised.value.retry_after == 3


@pytest.mark.parametrize(
    ("status", "description", "code"),
    [
        (403, "Forbidden: bot was blocked by the user", "blocked"),
        (403, "Forbidden: user is deactivated", "blocked"),
        (400, "Bad Request: chat not found", "unreachable"),
        (400, "Bad Request: message text is empty", "bad_request"),
    ],
)
def test_permanent_errors(
    api_channel: TelegramChannel, bot_api: StandIn, status: int, description: str, code: str
) -> None:
    bot_api.respond("POST", f"{API}/sendMessage", status, _telegram_error(status, description))

    with pytest.raises(PermanentError) as raised:
        api_channel.send(_reply())

    assert raised.value.code == code


def test_rejected_token_is_permanent(api_channel: TelegramChannel, bot_api: StandIn) -> None:
    bot_api.respond("POST", f"{API}/getMe", 401, _telegram_error(401, "Unauthorized"))

    with pytest.raises(PermanentError) as raised:
        api_channel.send(_reply())

    assert raised.value.code == "unauthorized"
    assert _sent(bot_api) == []


@pytest.mark.parametrize("status", [500, 502])
def test_server_errors_are_transient(api_channel: TelegramChannel, bot_api: StandIn, status: int) -> None:
    bot_api.respond("POST", f"{API}/sendMessage", status, _telegram_error(status, "Internal Server Error"))

    with pytest.raises(TransientError):
        api_channel.send(_reply())


def test_server_down_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = TelegramChannel(telegram_settings(f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(TransientError):
            adapter.send(_reply())
    finally:
        adapter.close()


def test_recipient_must_be_a_chat_id(api_channel: TelegramChannel, bot_api: StandIn) -> None:
    with pytest.raises(PermanentError) as raised:
        api_channel.send(OutboundMessage(channel="telegram", recipient="+56961234567", text="hola"))

    assert raised.value.code == "unreachable"
    assert bot_api.requests == []


def test_concurrent_sends_from_worker_threads(
    api_channel: TelegramChannel, bot_api: StandIn, telegram_data: Path
) -> None:
    bot_api.respond("POST", f"{API}/sendMessage", 200, _load(telegram_data / "api_send_message.json"), once=False)
    start = threading.Barrier(4)

    def send(number: int) -> str:
        start.wait()
        return api_channel.send(_reply(f"mensaje {number}")).provider_message_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(send, range(4)))

    assert results == [f"{CHAT_ID}:202"] * 4
    assert sorted(_fields(request)["text"] for request in _sent(bot_api)) == [f"mensaje {n}" for n in range(4)]


def test_sends_repeatedly_over_kept_alive_connections(bot_api: StandIn, telegram_data: Path) -> None:
    """The reason for the adapter's own loop: pooled connections outlive a send (asyncio.run per send breaks)."""
    # The stand-in speaks HTTP/1.0 (one connection per request); api.telegram.org keeps connections alive.
    bot_api._server.RequestHandlerClass.protocol_version = "HTTP/1.1"
    bot_api.respond("POST", f"{API}/sendMessage", 200, _load(telegram_data / "api_send_message.json"), once=False)
    adapter = TelegramChannel(telegram_settings(bot_api.url))
    try:
        results = [adapter.send(_reply(f"mensaje {n}")).provider_message_id for n in range(3)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results += pool.map(lambda n: adapter.send(_reply(f"mensaje {n}")).provider_message_id, range(3, 7))
    finally:
        adapter.close()

    assert results == [f"{CHAT_ID}:202"] * 7
    assert len(_sent(bot_api)) == 7


def test_sends_again_after_close(api_channel: TelegramChannel, bot_api: StandIn, telegram_data: Path) -> None:
    bot_api.respond("POST", f"{API}/sendMessage", 200, _load(telegram_data / "api_send_message.json"), once=False)
    api_channel.send(_reply())

    api_channel.close()

    assert api_channel.send(_reply()).provider_message_id == f"{CHAT_ID}:202"
    assert len(_sent(bot_api)) == 2


def test_deep_link() -> None:
    assert (
        deep_link("@cobrabot_demo_bot", "eyJkIjo0Mn0_Xk3q-9Zt")
        == "https://t.me/cobrabot_demo_bot?start=eyJkIjo0Mn0_Xk3q-9Zt"
    )


@pytest.mark.parametrize("token", ["", "a.b", "with space", "x" * 65])
def test_deep_link_refuses_what_telegram_would_drop(token: str) -> None:
    with pytest.raises(ValueError, match="start parameter"):
        deep_link("cobrabot_demo_bot", token)
