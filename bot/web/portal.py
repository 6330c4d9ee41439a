"""The debtor's self-service portal (`/p/<token>`) and its web chat (`/p/<token>/chat`)."""

from __future__ import annotations

import logging
from typing import Annotated

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from bot.debtors import balances, open_invoices
from bot.domain import InboundMessage, Money
from bot.i18n import format_date, format_money, language_of
from bot.models import Debtor, Message, Outbox, PaymentLink
from bot.portal import ExpiredPortalToken, InvalidPortalToken
from bot.services import Services
from bot.templates import TemplateRenderer
from bot.web.errors import json_error, validation_error

logger = logging.getLogger(__name__)
blueprint = Blueprint("portal", __name__)


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text: Annotated[str, Field(min_length=1, max_length=2000)]
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = Field(
        None, description="Client message id; a retry with the same id is answered once"
    )


def services() -> Services:
    return current_app.extensions["cobrabot"]


def _debtor_id(token: str) -> int | Response:
    try:
        return services().portal.verify(token, now=services().clock())
    except ExpiredPortalToken:
        return json_error(410, "link_expired", "this link has expired; ask for a new one")
    except InvalidPortalToken:
        return json_error(404, "not_found", "unknown link")


@blueprint.get("/p/<token>")
def page(token: str) -> Response | str:
    debtor_id = _debtor_id(token)
    if isinstance(debtor_id, Response):
        abort(debtor_id.status_code)
    svc = services()
    with svc.database.session() as session:
        debtor = session.get(Debtor, debtor_id)
        if debtor is None:
            abort(404)
        invoices = open_invoices(session, debtor.id)
        renderer = TemplateRenderer.from_session(session)
        locale = debtor.locale
        texts = {
            key: renderer.render(key, locale, "webchat", {"creditor_name": debtor.creditor.name})
            for key in (
                "portal_title",
                "portal_balance",
                "portal_invoices",
                "portal_due",
                "portal_chat_title",
                "portal_chat_placeholder",
                "portal_send",
                "portal_no_invoices",
                "portal_pay",
            )
        }
        rows = [
            {
                "number": invoice.number,
                "due": format_date(invoice.due_date, locale, "medium"),
                "balance": format_money(Money(invoice.balance_minor, invoice.currency), locale),
            }
            for invoice in invoices
        ]
        totals = [format_money(money, locale) for money in balances(invoices)]
        return render_template(
            "portal.html", texts=texts, invoices=rows, totals=totals, lang=language_of(locale), token=token
        )


@blueprint.get("/l/<code>")
def short_link(code: str) -> Response:
    """The short, SMS-friendly payment link: to the portal while it is active, else 404/410."""
    svc = services()
    with svc.database.session() as session:
        link = session.scalars(select(PaymentLink).where(PaymentLink.short_code == code)).one_or_none()
        if link is None:
            abort(404)
        if link.status != "active" or link.expires_at <= svc.clock():
            abort(410)
        return redirect(url_for("portal.page", token=link.token), code=302)


@blueprint.get("/p/<token>/messages")
def messages(token: str) -> Response | tuple[dict[str, object], int]:
    """The web chat's outbound messages after `?after=<id>`: what an agent (or a reminder) said since the page
    last looked. The page polls this; delivery to the web chat is the debtor reading it here."""
    debtor_id = _debtor_id(token)
    if isinstance(debtor_id, Response):
        return debtor_id
    after = request.args.get("after", "0")
    if not after.isdigit():
        return json_error(400, "bad_request", "after must be a message id (a whole number)")
    with services().database.session() as session:
        # Only what went through the outbox: the chat's own replies already came back in the POST's response.
        rows = session.scalars(
            select(Message)
            .join(Outbox, Outbox.message_id == Message.id)
            .where(Message.debtor_id == debtor_id, Message.channel == "webchat", Outbox.status == "sent")
            .where(Message.id > int(after))
            .order_by(Message.id)
            .limit(50)
        ).all()
    return {"messages": [{"id": row.id, "text": row.body} for row in rows]}, 200


@blueprint.post("/p/<token>/chat")
def chat(token: str) -> Response | tuple[dict[str, object], int]:
    debtor_id = _debtor_id(token)
    if isinstance(debtor_id, Response):
        return debtor_id
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        return json_error(400, "bad_request", 'expected a JSON object like {"text": "hola"}')
    try:
        data = ChatIn.model_validate(payload)
    except ValidationError as exc:
        return validation_error(exc)
    message = InboundMessage(
        channel="webchat",
        sender=f"portal:{debtor_id}",
        text=data.text,
        provider_message_id=f"{debtor_id}:{data.id}" if data.id else None,
        received_at=services().clock(),
    )
    try:
        received = services().conversations.receive(message, debtor_id, verified=True)
    except LookupError:
        return json_error(404, "not_found", "unknown link")
    replies = [
        {"text": reply.text, "buttons": [{"title": b.title, "payload": b.payload} for b in reply.buttons]}
        for reply in received.replies
    ]
    return {"replies": replies, "duplicate": received.duplicate}, 200
