"""Channel adapters, one module per channel, all implementing bot.ports.Channel."""

from __future__ import annotations

import logging

from bot.config import Settings
from bot.ports import Channel, ChannelRegistry

logger = logging.getLogger(__name__)


def build_registry(settings: Settings) -> ChannelRegistry:
    """Every channel whose credentials are configured; the others are reported disabled, not fatal."""
    registry = ChannelRegistry()
    status = settings.channel_status()
    for name, make in _FACTORIES.items():
        if status.get(name) is None:
            registry.register(make(settings))
        else:
            logger.info("channel %s disabled: %s", name, status[name])
    return registry


def _sms(settings: Settings) -> Channel:
    from channels.twilio_sms import TwilioSms

    return TwilioSms(settings)


def _whatsapp(settings: Settings) -> Channel:
    from channels.twilio_whatsapp import TwilioWhatsApp

    return TwilioWhatsApp(settings)


def _telegram(settings: Settings) -> Channel:
    from channels.telegram import TelegramChannel

    return TelegramChannel(settings)


def _email(settings: Settings) -> Channel:
    from channels.email import EmailChannel

    return EmailChannel(settings)


def _webchat(_settings: Settings) -> Channel:
    from channels.webchat import WebChat

    return WebChat()


_FACTORIES = {"sms": _sms, "whatsapp": _whatsapp, "telegram": _telegram, "email": _email, "webchat": _webchat}
