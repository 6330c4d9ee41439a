"""The Channel port every adapter in channels/ implements, and the registry the core finds them through.

The core never imports channels/: bot/app.py (or bot/services.py's caller) registers adapters by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from bot.domain import ChannelCapabilities, OutboundMessage, Parsed, SendResult, WebhookRequest


@runtime_checkable
class Channel(Protocol):
    name: str  # "sms", "whatsapp", "telegram", "email", "webchat"
    capabilities: ChannelCapabilities

    def parse(self, request: WebhookRequest) -> Parsed:
        """Verify the request's signature and turn it into messages and delivery statuses.

        Raises InvalidSignature (-> 403) or BadPayload (-> 400); never touches the database.
        """
        ...

    def send(self, message: OutboundMessage) -> SendResult:
        """Deliver one message; raises TransientError (retry later) or PermanentError (never on this channel)."""
        ...


class UnknownChannel(KeyError):
    pass


class ChannelRegistry:
    """Adapters by channel name; a channel whose credentials are missing is simply not registered."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def register(self, channel: Channel) -> None:
        self._channels[channel.name] = channel

    def get(self, name: str) -> Channel:
        try:
            return self._channels[name]
        except KeyError:
            raise UnknownChannel(f"channel {name!r} is not enabled") from None

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def __iter__(self) -> Iterator[Channel]:
        return iter(self._channels.values())

    def names(self) -> list[str]:
        return sorted(self._channels)


def render_buttons(message: OutboundMessage) -> str:
    """Buttons as numbered lines, for channels that have none (Rasa's fallback): one flow runs everywhere."""
    if not message.buttons:
        return message.text
    lines = [f"{number}. {button.title}" for number, button in enumerate(message.buttons, start=1)]
    return "\n".join([message.text, "", *lines])
