"""What Twilio's SMS and WhatsApp adapters share: signature checks, form parsing, the SDK client, error mapping.

Inbound webhooks are verified with the SDK's RequestValidator before anything is read; sending goes through the
SDK's Client, whose API base can be pointed elsewhere (COBRABOT_TWILIO_API_URL) for tests and staging.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator, add_port, compare, remove_port
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from bot.config import Settings
from bot.domain import (
    BadPayload,
    ChannelCapabilities,
    ChannelName,
    DeliveryStatus,
    InboundMessage,
    InvalidSignature,
    OutboundMessage,
    Parsed,
    PermanentError,
    SendResult,
    TransientError,
    WebhookRequest,
)
from bot.ports import render_buttons

logger = logging.getLogger(__name__)

STATUS_PATH = "/webhooks/twilio/status"
WHATSAPP_PREFIX = "whatsapp:"
SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_HEADER_TITLED = "X-Twilio-Signature"  # how the web edge (werkzeug) spells it
# Twilio refuses a Body over 1600 characters on every channel (errors 21617/21658), WhatsApp included.
BODY_LIMIT = 1600
DEFAULT_TIMEOUT = 10.0

OPTED_OUT_CODES = frozenset({21610})
OUTSIDE_WINDOW_CODES = frozenset({63016})
UNREACHABLE_CODES = frozenset({21211, 21614, 21408, 21612, 63003})

_E164 = re.compile(r"\+[1-9]\d{1,14}")
_MEDIA_KEY = re.compile(r"MediaUrl(\d+)")
_METADATA_KEYS = ("ProfileName", "WaId")


class TwilioChannel:
    """One Twilio sender (an SMS number or a WhatsApp sender); subclasses say which and how addresses look."""

    name: str
    capabilities: ChannelCapabilities
    address_prefix: str = ""
    from_setting: str

    def __init__(self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        account_sid, self._auth_token, sender = _required_settings(settings, self.from_setting)
        self._from = self.address_prefix + _bare(sender)
        self._status_callback = settings.public_url + STATUS_PATH
        self._client = make_client(account_sid, self._auth_token, settings.twilio_api_url, timeout)

    def parse(self, request: WebhookRequest) -> Parsed:
        verify_signature(request, self._auth_token)
        if "MessageStatus" in request.form:
            return Parsed(statuses=(delivery_status(request.form, self.name),))
        return Parsed(messages=(self._inbound(request.form),))

    def send(self, message: OutboundMessage) -> SendResult:
        to = self.address_prefix + _bare(message.recipient)
        created = [self._create(to, params) for params in self._message_params(message)]
        return SendResult(provider_message_id=created[0].sid, status=created[0].status or "sent")

    def _inbound(self, form: Mapping[str, str]) -> InboundMessage:
        sender = _field(form, "From")
        if self.address_prefix != _prefix_of(sender):
            raise BadPayload(f"a {_prefix_of(sender) or 'plain'} sender on the {self.name} webhook")
        return InboundMessage(
            channel=self.name,
            sender=_phone(sender),
            text=form.get("Body", ""),
            provider_message_id=_field(form, "MessageSid"),
            media_urls=media_urls(form),
            metadata=_metadata(form),
        )

    def _message_params(self, message: OutboundMessage) -> Iterator[dict[str, Any]]:
        """One set of Messages.create arguments per message Twilio should send."""
        for part in split_text(render_buttons(message), BODY_LIMIT):
            yield {"body": part}

    def _create(self, to: str, params: dict[str, Any]) -> MessageInstance:
        try:
            created = self._client.messages.create(
                to=to, from_=self._from, status_callback=self._status_callback, **params
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise permanent_error(exc) from exc
        logger.info("twilio %s message %s %s", self.name, created.sid, created.status)
        return created


def parse_status(request: WebhookRequest, auth_token: str) -> Parsed:
    """A status callback for either channel (the edge serves both on one route): the channel is in From/To."""
    verify_signature(request, auth_token)
    form = request.form
    whatsapp = any(_prefix_of(form.get(key, "")) == WHATSAPP_PREFIX for key in ("From", "To"))
    channel = ChannelName.WHATSAPP.value if whatsapp else ChannelName.SMS.value
    return Parsed(statuses=(delivery_status(form, channel),))


def verify_signature(request: WebhookRequest, auth_token: str) -> None:
    """Twilio signs COBRABOT_PUBLIC_URL + path plus the sorted form fields with the auth token."""
    signature = _signature_header(request.headers)
    # An empty token would make every forged signature computable, so it verifies nothing.
    if not (auth_token and signature):
        raise InvalidSignature("missing X-Twilio-Signature")
    if not _signed(RequestValidator(auth_token), request.url, request.form, signature):
        raise InvalidSignature("X-Twilio-Signature does not match")


def _signature_header(headers: Mapping[str, str]) -> str:
    if signature := headers.get(SIGNATURE_HEADER_TITLED):
        return signature
    return next((value for key, value in headers.items() if key.lower() == SIGNATURE_HEADER), "")


def _signed(validator: RequestValidator, url: str, form: Mapping[str, str], signature: str) -> bool:
    """RequestValidator.validate, computing one HMAC instead of two for a genuine request. `validate` accepts a
    signature for the URL without or with its port (form params, so no body hash); Twilio signs the URL as
    configured, which is one of those two, so that one is tried first with the SDK's own functions. Anything
    else gets the full `validate`: the SDK accepts and refuses exactly what it always did."""
    if url in _sdk_urls(url) and compare(validator.compute_signature(url, form), signature):
        return True
    return bool(validator.validate(url, form, signature))


@lru_cache(maxsize=64)
def _sdk_urls(url: str) -> tuple[str, str]:
    """The two URLs `validate` signs for `url`. Webhook URLs are few, so parsing is cached; URLs varied by a
    caller (the query) only evict entries."""
    parsed = urlparse(url)
    return remove_port(parsed), add_port(parsed)


def delivery_status(form: Mapping[str, str], channel: str) -> DeliveryStatus:
    return DeliveryStatus(
        channel=channel,
        provider_message_id=_field(form, "MessageSid"),
        status=_field(form, "MessageStatus"),
        error_code=form.get("ErrorCode") or None,
    )


def media_urls(form: Mapping[str, str]) -> tuple[str, ...]:
    """MediaUrl0..N in index order, as given: attachments are only ever fetched by whoever needs them."""
    indexed = sorted((int(match[1]), url) for key, url in form.items() if (match := _MEDIA_KEY.fullmatch(key)))
    return tuple(url for _, url in indexed)


def split_text(text: str, limit: int) -> list[str]:
    """Parts of at most `limit` UTF-16 units (how Twilio counts), cut at the last whitespace when there is one."""
    parts = []
    rest = text
    while _units(rest) > limit:
        cut = _fitting(rest, limit)
        space = max(rest.rfind(blank, 0, cut + 1) for blank in (" ", "\n", "\t"))
        end = space if space > 0 else cut
        parts.append(rest[:end].rstrip())
        rest = rest[end:].lstrip()
    parts.append(rest)
    # Whitespace-only pieces (leading or trailing blanks) are not messages; an empty text stays one empty part.
    return [part for part in parts if part] or [text]


def permanent_error(exc: TwilioRestException | TwilioServiceException) -> PermanentError:
    """Twilio's error codes -> the few reasons dispatch acts on; the message leaves out Twilio's text (PII)."""
    description = f"Twilio error {exc.code} (HTTP {exc.status})"
    if exc.code in OPTED_OUT_CODES:
        return PermanentError(description, code="opted_out")
    if exc.code in OUTSIDE_WINDOW_CODES:
        return PermanentError(description, code="outside_window")
    if exc.code in UNREACHABLE_CODES:
        return PermanentError(description, code="unreachable")
    return PermanentError(description, code=str(exc.code or exc.status))


def content_variables(variables: Mapping[Any, Any]) -> str:
    """Template variables as the JSON object of strings Twilio's Content API expects."""
    return json.dumps({str(key): str(value) for key, value in variables.items()}, ensure_ascii=False)


class RetryAwareHttpClient(TwilioHttpClient):
    """The SDK's HTTP client, raising TransientError where the response headers (Retry-After) are still at hand."""

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        try:
            response = super().request(method, url, params, data, headers, auth, timeout, allow_redirects)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"Twilio unreachable: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = _seconds(response.headers.get("Retry-After"))
            raise TransientError(f"Twilio answered HTTP {response.status_code}", retry_after=retry_after)
        return response


def make_client(account_sid: str, auth_token: str, api_url: str | None, timeout: float) -> Client:
    """The SDK client; with `api_url` set, its REST domain's base URL (https://api.twilio.com) is replaced."""
    client = Client(account_sid, auth_token, http_client=RetryAwareHttpClient(timeout=timeout))
    if api_url:
        client.api.base_url = api_url
        # TWILIO_EDGE/TWILIO_REGION would rewrite the host into <product>.<edge>.<region>.twilio.com.
        client.edge = client.region = None
    return client


def _required_settings(settings: Settings, from_setting: str) -> tuple[str, str, str]:
    fields = ("twilio_account_sid", "twilio_auth_token", from_setting)
    values = [getattr(settings, field) for field in fields]
    missing = [_env_name(field) for field, value in zip(fields, values, strict=True) if not value]
    if missing:
        raise ValueError(f"Twilio channel needs {', '.join(missing)}")
    return values[0], values[1], values[2]


def _env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return str(getattr(alias, "choices", [field])[0])


def _field(form: Mapping[str, str], key: str) -> str:
    value = form.get(key, "").strip()
    if not value:
        raise BadPayload(f"Twilio form without {key}")
    return value


def _prefix_of(address: str) -> str:
    return address[: address.index(":") + 1] if ":" in address else ""


def _bare(address: str) -> str:
    return address.removeprefix(_prefix_of(address)).strip()


def _phone(address: str) -> str:
    phone = _bare(address)
    if not _E164.fullmatch(phone):
        raise BadPayload("sender is not an E.164 phone number")
    return phone


def _metadata(form: Mapping[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {key: form[key] for key in _METADATA_KEYS if form.get(key)}
    if "NumMedia" in form:
        if not form["NumMedia"].isdigit():
            raise BadPayload("NumMedia is not a number")
        metadata["NumMedia"] = int(form["NumMedia"])
    return metadata


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fitting(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` UTF-16 units (emoji take two)."""
    cut = min(len(text), limit)
    while _units(text[:cut]) > limit:
        cut -= 1
    return cut


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in delta-seconds; the rare HTTP-date form is left to dispatch's own backoff."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None
