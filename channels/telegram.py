"""Telegram adapter: Bot API webhook updates in (python-telegram-bot's `Update`), messages out (`telegram.Bot`).

Only private chats are handled: a debt must never be discussed in a group where other people read along.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from telegram import Bot, CallbackQuery, Contact, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatType
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from bot.config import Settings
from bot.debtors import FieldError, normalize_phone
from bot.domain import (
    BadPayload,
    ChannelCapabilities,
    ChannelName,
    Clock,
    InboundMessage,
    InvalidSignature,
    OutboundMessage,
    Parsed,
    PermanentError,
    SendResult,
    TransientError,
    WebhookRequest,
    utcnow,
)
from bot.ports import render_buttons

logger = logging.getLogger(__name__)

T = TypeVar("T")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_API_URL = "https://api.telegram.org"
MAX_BUTTONS = 8
MAX_CALLBACK_DATA_BYTES = 64  # Bot API limit on InlineKeyboardButton.callback_data
SEND_TIMEOUT_SECONDS = 30.0  # ceiling over PTB's own 5 s connect/read/write timeouts
# Deep-link start parameters: https://core.telegram.org/bots/features#deep-linking
START_PARAMETER = re.compile(r"[A-Za-z0-9_-]{1,64}")
CHAT_ID = re.compile(r"-?[0-9]{1,20}")
START_COMMAND = re.compile(r"/start(?:@\w+)?(?:\s+(\S+))?\s*")


def deep_link(bot_username: str, token: str) -> str:
    """https://t.me/<bot>?start=<token>: opening it sends "/start <token>" to the bot from the debtor's chat."""
    if not START_PARAMETER.fullmatch(token):
        raise ValueError("a Telegram start parameter is 1-64 characters of A-Z, a-z, 0-9, _ and -")
    return f"https://t.me/{bot_username.lstrip('@')}?start={token}"


class TelegramChannel:
    """The Channel port for Telegram; parse() is pure, send() blocks the calling (worker) thread."""

    name = ChannelName.TELEGRAM.value
    capabilities = ChannelCapabilities(max_length=4096, buttons=True, max_buttons=MAX_BUTTONS)

    def __init__(self, settings: Settings, clock: Clock = utcnow) -> None:
        if not settings.telegram_bot_token:
            raise ValueError("TELEGRAM_BOT_TOKEN is required for the Telegram channel")
        if not settings.telegram_secret:
            # Without the secret anyone could post forged updates as any chat: never run the webhook open.
            raise ValueError("COBRABOT_TELEGRAM_SECRET is required for the Telegram channel (webhook secret token)")
        self._token = settings.telegram_bot_token
        self._secret = settings.telegram_secret.encode()
        self._base_url = f"{settings.telegram_api_url or DEFAULT_API_URL}/bot"
        self._clock = clock
        self._runner = _BotRunner(self._new_bot)

    def parse(self, request: WebhookRequest) -> Parsed:
        self._verify(request.headers)
        update = _update_from(request.body)
        message = _inbound(update, self._clock)
        return Parsed(messages=(message,)) if message else Parsed()

    def send(self, message: OutboundMessage) -> SendResult:
        chat_id = _chat_id(message.recipient)
        sent = self._runner.run(lambda bot: _send(bot, chat_id, message))
        return SendResult(provider_message_id=f"{sent.chat_id}:{sent.message_id}")

    def close(self) -> None:
        """Close the HTTP client and stop the adapter's event loop; a later send() starts them afresh."""
        self._runner.close()

    def _new_bot(self) -> Bot:
        return Bot(self._token, base_url=self._base_url)

    def _verify(self, headers: Mapping[str, str]) -> None:
        given = next((value for key, value in headers.items() if key.lower() == SECRET_HEADER.lower()), "")
        if not hmac.compare_digest(given.encode(), self._secret):
            raise InvalidSignature(f"missing or wrong {SECRET_HEADER}")


def _update_from(body: bytes) -> Update:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload("Telegram update is not JSON") from exc
    if not isinstance(data, dict):
        raise BadPayload("Telegram update must be a JSON object")
    update_id = data.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise BadPayload("Telegram update has no integer update_id")
    try:
        return Update.de_json(data, bot=None)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BadPayload(f"malformed Telegram update {update_id}") from exc


def _inbound(update: Update, clock: Clock) -> InboundMessage | None:
    """The debtor's message or button press, or None for updates there is nothing to answer (edits, stickers...)."""
    if update.message is not None:
        return _from_message(update, update.message)
    if update.callback_query is not None:
        return _from_button(update, update.callback_query, clock)
    return None


def _from_button(update: Update, query: CallbackQuery, clock: Clock) -> InboundMessage | None:
    """A press on one of our inline buttons: its payload is the text, as if the debtor had typed the option."""
    # No message means a button on an inline-mode message, which we never send; it could sit in any chat.
    if not query.data or query.message is None or not _is_private(query.message.chat.type):
        return None
    return InboundMessage(
        channel=ChannelName.TELEGRAM.value,
        sender=str(query.message.chat.id),
        text=query.data,
        provider_message_id=str(update.update_id),
        received_at=clock(),  # a callback query carries no timestamp
        metadata={"button": True, "callback_query_id": query.id} | _username(query.from_user.username),
    )


def _from_message(update: Update, message: Message) -> InboundMessage | None:
    if not _is_private(message.chat.type) or (message.text is None and message.contact is None):
        return None
    metadata: dict[str, Any] = {}
    if message.from_user is not None:
        metadata |= _username(message.from_user.username)
    if message.text is not None and (start := START_COMMAND.fullmatch(message.text)) and start.group(1):
        metadata["start_payload"] = start.group(1)
    if message.contact is not None:
        metadata |= _contact(message.contact, message.from_user.id if message.from_user else None)
    return InboundMessage(
        channel=ChannelName.TELEGRAM.value,
        sender=str(message.chat.id),
        text=message.text or "",
        provider_message_id=str(update.update_id),
        received_at=message.date,
        metadata=metadata,
    )


def _contact(contact: Contact, sender_id: int | None) -> dict[str, Any]:
    """The shared phone number, and whether it is the sender's own (any contact from the address book can be shared)."""
    facts: dict[str, Any] = {"contact_user_matches": contact.user_id is not None and contact.user_id == sender_id}
    digits = re.sub(r"[^\d]", "", contact.phone_number)
    try:
        # Telegram sends the full international number, usually without the "+".
        facts["contact_phone"] = normalize_phone(f"+{digits}", "ZZ")
    except FieldError:
        logger.info("a shared Telegram contact has no valid phone number; ignored")
    return facts


def _username(username: str | None) -> dict[str, str]:
    return {"username": username} if username else {}


def _is_private(chat_type: str) -> bool:
    return chat_type == ChatType.PRIVATE


def _chat_id(recipient: str) -> int:
    # Strictly digits: int() would also take "+56961234567", a phone number queued for the wrong channel.
    if not CHAT_ID.fullmatch(recipient):
        raise PermanentError(f"not a Telegram chat id: {recipient!r}", code="unreachable")
    return int(recipient)


async def _send(bot: Bot, chat_id: int, message: OutboundMessage) -> Message:
    """sendMessage, with PTB's errors translated where they are raised (on the adapter's loop thread)."""
    try:
        await bot.initialize()  # getMe once per Bot: checks the token; a no-op after the first success
        # No parse_mode: texts are plain, so a name with "*" or "<" cannot break or inject formatting.
        return await bot.send_message(chat_id=chat_id, text=_text(message), reply_markup=_keyboard(message))
    except RetryAfter as exc:
        raise TransientError(str(exc), retry_after=_seconds(exc.retry_after)) from exc
    except Forbidden as exc:
        raise PermanentError(f"Telegram refused the chat: {exc.message}", code="blocked") from exc
    except BadRequest as exc:  # before NetworkError: BadRequest subclasses it
        code = "unreachable" if "chat not found" in exc.message.lower() else "bad_request"
        raise PermanentError(f"Telegram rejected the message: {exc.message}", code=code) from exc
    except NetworkError as exc:  # includes TimedOut and 5xx answers
        raise TransientError(f"Telegram unreachable: {exc.message}") from exc
    except ChatMigrated as exc:  # a group became a supergroup; we only talk in private chats
        raise PermanentError(f"chat moved to {exc.new_chat_id}", code="unreachable") from exc
    except InvalidToken as exc:
        raise PermanentError("TELEGRAM_BOT_TOKEN was rejected by Telegram", code="unauthorized") from exc
    except TelegramError as exc:  # e.g. an unparsable answer: nothing says a retry would fail
        raise TransientError(f"Telegram error: {exc.message}") from exc


def _fits_keyboard(message: OutboundMessage) -> bool:
    return 0 < len(message.buttons) <= MAX_BUTTONS and all(
        len(button.payload.encode()) <= MAX_CALLBACK_DATA_BYTES for button in message.buttons
    )


def _text(message: OutboundMessage) -> str:
    # Buttons that cannot be a keyboard still reach the debtor, as numbered lines like on SMS.
    return message.text if _fits_keyboard(message) else render_buttons(message)


def _keyboard(message: OutboundMessage) -> InlineKeyboardMarkup | None:
    if not _fits_keyboard(message):
        return None
    rows = [[InlineKeyboardButton(text=button.title, callback_data=button.payload)] for button in message.buttons]
    return InlineKeyboardMarkup(rows)


def _seconds(retry_after: int | float | timedelta) -> float:
    # PTB 22 returns int seconds (deprecated) unless PTB_TIMEDELTA is set, and timedelta in the next major.
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)


class _BotRunner:
    """One private asyncio loop, on its own daemon thread, on which every call of one `telegram.Bot` runs.

    Why not `asyncio.run()` per message: PTB's Bot keeps an httpx.AsyncClient whose pooled keep-alive
    connections belong to the loop that opened them. The next `asyncio.run()` reuses such a connection on a new
    loop and fails (NetworkError "Event loop is closed" on every other send with PTB 22.8 against a keep-alive
    server), and two worker threads each running their own loop would share one client across loops. A fresh
    Bot per message avoids that but pays a new connection (and TLS handshake) plus getMe every time.

    So the loop lives as long as the adapter: worker threads submit coroutines with `run_coroutine_threadsafe`
    and block on the future; concurrent sends interleave on the one loop and share the client's connection
    pool. The loop and Bot are created lazily under a lock, and again in a forked child (a Celery prefork
    worker inherits no running thread).
    """

    def __init__(self, make_bot: Callable[[], Bot]) -> None:
        self._make_bot = make_bot
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._bot: Bot | None = None
        self._pid = 0

    def run(self, call: Callable[[Bot], Coroutine[Any, Any, T]], timeout: float = SEND_TIMEOUT_SECONDS) -> T:
        """Run `call(bot)` (a coroutine function) on the loop and return its result in the calling thread."""
        loop, bot = self._started()
        future = asyncio.run_coroutine_threadsafe(call(bot), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TransientError(f"Telegram did not answer within {timeout:.0f} s") from None

    def close(self) -> None:
        """Shut the Bot down and stop the loop; for process shutdown, when no send is in flight."""
        with self._lock:
            loop, thread, bot = self._loop, self._thread, self._bot
            self._loop = self._thread = self._bot = None
            inherited = self._pid != os.getpid()
        if loop is None or thread is None or bot is None or inherited:
            return  # nothing started, or the parent's loop, whose thread does not exist in this process
        try:
            asyncio.run_coroutine_threadsafe(bot.shutdown(), loop).result(SEND_TIMEOUT_SECONDS)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(SEND_TIMEOUT_SECONDS)
            loop.close()

    def _started(self) -> tuple[asyncio.AbstractEventLoop, Bot]:
        with self._lock:
            if self._loop is None or self._bot is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="telegram-bot", daemon=True)
                self._thread.start()
                self._bot = self._make_bot()
                self._pid = os.getpid()
            return self._loop, self._bot
