"""Provider webhooks: verify, parse (in the channel adapter), hand over to bot.inbound, answer fast."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Response, current_app, jsonify, request

from bot.domain import BadPayload, InvalidSignature, Parsed, WebhookRequest
from bot.models import MAX_PROVIDER_ID_LENGTH
from bot.ports import UnknownChannel
from bot.services import Services
from bot.web.errors import json_error

logger = logging.getLogger(__name__)
blueprint = Blueprint("webhooks", __name__)
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def services() -> Services:
    return current_app.extensions["cobrabot"]


def _webhook_request(svc: Services) -> WebhookRequest:
    # Twilio signs the URL it was configured with: the public URL, not whatever host the proxy forwarded.
    url = svc.settings.public_url + request.full_path.rstrip("?")
    return WebhookRequest(
        url=url,
        method=request.method,
        # The request's own header view, not a copy: adapters look up one or two of them.
        headers=request.headers,
        body=request.get_data(cache=True),
        form=request.form.to_dict() if request.mimetype == "application/x-www-form-urlencoded" else {},
    )


def _receive(channel_name: str, ok: Response | Callable[[Parsed], Response]) -> Response:
    svc = services()
    try:
        channel = svc.registry.get(channel_name)
        parsed = channel.parse(_webhook_request(svc))
    except UnknownChannel:
        return json_error(404, "channel_disabled", f"the {channel_name} channel is not configured")
    except InvalidSignature:
        logger.warning("%s webhook with an invalid signature rejected", channel_name)
        return json_error(403, "invalid_signature", "the request signature did not verify")
    except BadPayload as exc:
        return json_error(400, "bad_payload", str(exc))
    if any(len(message.provider_message_id or "") > MAX_PROVIDER_ID_LENGTH for message in parsed.messages):
        # Longer than a whole header line: no provider sends that, and it could not be stored to deduplicate.
        return json_error(400, "bad_payload", f"message id longer than {MAX_PROVIDER_ID_LENGTH} characters")
    return _handled(svc, parsed, ok)


def _handled(svc: Services, parsed: Parsed, ok: Response | Callable[[Parsed], Response]) -> Response:
    # Either way the provider hears 200 only once its message is committed: as a finished turn, or in the inbox.
    svc.inbound.handle(svc.inbox.accept(parsed) if svc.settings.inbound_queue else parsed)
    return ok(parsed) if callable(ok) and not isinstance(ok, Response) else ok


def _twiml() -> Response:
    return Response(EMPTY_TWIML, mimetype="text/xml")


@blueprint.post("/webhooks/twilio/sms")
def twilio_sms() -> Response:
    return _receive("sms", _twiml())


@blueprint.post("/webhooks/twilio/whatsapp")
def twilio_whatsapp() -> Response:
    return _receive("whatsapp", _twiml())


@blueprint.post("/webhooks/twilio/status")
def twilio_status() -> Response:
    # Both Twilio channels share one status callback; the adapters tell SMS from WhatsApp by the addresses.
    channel = "whatsapp" if "whatsapp:" in request.form.get("From", "") + request.form.get("To", "") else "sms"
    return _receive(channel, _twiml())


@blueprint.post("/webhooks/telegram")
def telegram() -> Response:
    return _receive("telegram", _telegram_answer)


def _telegram_answer(parsed: Parsed) -> Response:
    """Answer a button press in the webhook's own response (Telegram allows one method call there), so the
    debtor's button stops spinning without another request."""
    for message in parsed.messages:
        if query_id := message.metadata.get("callback_query_id"):
            return jsonify(method="answerCallbackQuery", callback_query_id=query_id)
    return jsonify({})


@blueprint.post("/webhooks/email")
def email() -> Response:
    return _receive("email", Response('{"status": "accepted"}', mimetype="application/json"))
