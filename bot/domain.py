"""Plain value types shared by the engine, the channels and the web edge. No I/O, no ORM."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from babel.numbers import get_currency_precision

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class ChannelName(enum.StrEnum):
    SMS = "sms"
    WHATSAPP = "whatsapp"
    TELEGRAM = "telegram"
    EMAIL = "email"
    WEBCHAT = "webchat"


class Intent(enum.StrEnum):
    """Stable intent names: the offline NLU, the LLM path and flows all use exactly these."""

    PAY_NOW = "pay_now"
    BALANCE = "balance"
    PROMISE_TO_PAY = "promise_to_pay"
    REQUEST_PLAN = "request_plan"
    ACCEPT = "accept"
    REJECT = "reject"
    COUNTER_OFFER = "counter_offer"
    ALREADY_PAID = "already_paid"
    DISPUTE = "dispute"
    HUMAN = "human"
    OPT_OUT = "opt_out"
    WRONG_PERSON = "wrong_person"
    HARDSHIP = "hardship"
    DECEASED = "deceased"
    BANKRUPTCY = "bankruptcy"
    FAQ = "faq"
    GREETING = "greeting"
    THANKS = "thanks"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in integer minor units of an ISO 4217 currency (CLP has none, USD has two)."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise TypeError("Money.minor must be an int of minor units")
        if len(self.currency) != 3 or not self.currency.isupper():
            raise ValueError(f"not an ISO 4217 currency code: {self.currency!r}")

    @property
    def digits(self) -> int:
        return get_currency_precision(self.currency)

    @property
    def amount(self) -> Decimal:
        return Decimal(self.minor).scaleb(-self.digits)

    @classmethod
    def from_amount(cls, amount: Decimal | int | str, currency: str) -> Money:
        """Build from a major-unit amount; refuses fractions the currency cannot hold."""
        value = Decimal(str(amount)).scaleb(get_currency_precision(currency))
        if value != value.to_integral_value():
            raise ValueError(f"{amount} has more decimals than {currency} allows")
        return cls(int(value), currency)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor - other.minor, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot mix {self.currency} and {other.currency}")


@dataclass(frozen=True, slots=True)
class Entities:
    """What the NLU pulled out of a message, already typed and resolved."""

    dates: tuple[date, ...] = ()
    amounts: tuple[Money, ...] = ()
    installments: int | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message from a debtor, whatever channel it came from."""

    channel: str
    sender: str
    text: str
    provider_message_id: str | None = None
    received_at: datetime = field(default_factory=utcnow)
    media_urls: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Button:
    title: str
    payload: str


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A reply or reminder to send; text is already rendered from a template in the debtor's locale."""

    channel: str
    recipient: str
    text: str
    template_key: str | None = None
    buttons: tuple[Button, ...] = ()
    message_id: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FaqAnswer:
    """An answer from the knowledge base and the title of the document it came from (shown to agents)."""

    text: str
    source: str


@dataclass(frozen=True, slots=True)
class Reply:
    """What the engine wants said: a template key plus the facts to fill it with."""

    template_key: str
    variables: dict[str, Any] = field(default_factory=dict)
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True, slots=True)
class ConversationState:
    """The part of a conversation the engine reads and writes; persisted as columns, not in memory."""

    flow_name: str
    flow_version: int
    node: str
    slots: dict[str, Any] = field(default_factory=dict)
    mode: str = "bot"
    identity_verified: bool = False


@dataclass(frozen=True, slots=True)
class Turn:
    """The engine's answer to one inbound message: replies, the new state and domain commands."""

    replies: tuple[Reply, ...]
    state: ConversationState
    commands: tuple[Any, ...] = ()
    intent: Intent = Intent.UNKNOWN
    confidence: float = 0.0


@dataclass(frozen=True, slots=True)
class ChannelCapabilities:
    max_length: int | None = None
    buttons: bool = False
    max_buttons: int = 0
    template_outside_window: bool = False
    media: bool = False


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """The parts of an HTTP request an adapter needs; the web edge builds it so adapters stay framework-free."""

    url: str
    method: str
    headers: Mapping[str, str]  # names in any case; the web edge passes its request's (read-only) headers
    body: bytes
    form: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    channel: str
    provider_message_id: str
    status: str
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    messages: tuple[InboundMessage, ...] = ()
    statuses: tuple[DeliveryStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_message_id: str
    status: str = "sent"


class ChannelError(Exception):
    """Base of the errors adapters raise."""


class InvalidSignature(ChannelError):
    """The webhook's signature or secret did not verify (HTTP 403)."""


class BadPayload(ChannelError):
    """The webhook body could not be understood (HTTP 400)."""


class TransientError(ChannelError):
    """Sending failed in a way worth retrying (timeouts, 429, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ChannelError):
    """Sending can never succeed on this channel for this recipient (bad number, opted out)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
