"""WhatsApp through Twilio: addresses carry the "whatsapp:" prefix; outside the 24-hour window only approved
templates (Content API, `content_sid`) may be sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bot.domain import ChannelCapabilities, ChannelName, OutboundMessage
from channels.twilio_common import BODY_LIMIT, WHATSAPP_PREFIX, TwilioChannel, content_variables


class TwilioWhatsApp(TwilioChannel):
    """Free text inside the customer-service window, a pre-approved template (metadata["content_sid"]) outside."""

    name = ChannelName.WHATSAPP.value
    capabilities = ChannelCapabilities(max_length=BODY_LIMIT, buttons=False, template_outside_window=True, media=True)
    address_prefix = WHATSAPP_PREFIX
    from_setting = "twilio_whatsapp_from"

    def _message_params(self, message: OutboundMessage) -> Iterator[dict[str, Any]]:
        content_sid = message.metadata.get("content_sid")
        if not content_sid:
            yield from super()._message_params(message)
            return
        params: dict[str, Any] = {"content_sid": content_sid}
        if message.metadata.get("content_variables"):
            params["content_variables"] = content_variables(message.metadata["content_variables"])
        yield params
