"""SMS through Twilio: plain text up to 1600 characters (Twilio concatenates the segments), no buttons."""

from __future__ import annotations

from bot.domain import ChannelCapabilities, ChannelName
from channels.twilio_common import BODY_LIMIT, TwilioChannel


class TwilioSms(TwilioChannel):
    """Inbound SMS and status callbacks in, text out; longer texts go as several messages cut between words."""

    name = ChannelName.SMS.value
    capabilities = ChannelCapabilities(max_length=BODY_LIMIT, buttons=False)
    from_setting = "twilio_sms_from"
