"""The portal's web chat as a channel: inbound arrives through POST /p/<token>/chat (the signed portal token is
its authentication), outbound is kept in the database and picked up by the portal page's polling."""

from __future__ import annotations

from bot.domain import BadPayload, ChannelCapabilities, OutboundMessage, Parsed, SendResult, WebhookRequest


class WebChat:
    name = "webchat"
    capabilities = ChannelCapabilities(max_length=4000, buttons=True, max_buttons=8)

    def parse(self, request: WebhookRequest) -> Parsed:
        raise BadPayload("web chat messages arrive through the portal's /p/<token>/chat endpoint")

    def send(self, message: OutboundMessage) -> SendResult:
        # The message row is the delivery: the debtor's open portal page fetches it on its next poll.
        return SendResult(provider_message_id=f"webchat:{message.message_id}", status="delivered")
