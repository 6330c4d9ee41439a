"""Payments at the HTTP edge: provider webhooks, the portal's Pay button and printable receipts."""

from __future__ import annotations

import logging
from datetime import timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain import BadPayload, InvalidSignature, Money
from bot.i18n import format_date, format_money, language_of
from bot.models import Debtor, Invoice, Payment
from bot.payments.links import create_link, reusable_link
from bot.payments.stripe_provider import StripeProvider
from bot.payments.webhook import handle_stripe
from bot.portal import ExpiredPortalToken, InvalidPortalToken
from bot.services import Services
from bot.templates import TemplateRenderer
from bot.web.errors import json_error

logger = logging.getLogger(__name__)
blueprint = Blueprint("payments", __name__)
# Stripe expires a Checkout Session after 24 hours; the link must not outlive it.
CHECKOUT_LIFETIME = timedelta(hours=23)
PAY_TEXTS = ("pay_title", "pay_amount", "pay_instructions", "pay_back")
RECEIPT_TEXTS = (
    "receipt_title",
    "receipt_creditor",
    "receipt_payer",
    "receipt_number",
    "receipt_date",
    "receipt_amount",
    "receipt_reference",
    "receipt_applied_to",
    "receipt_credit",
    "receipt_print",
)


def services() -> Services:
    return current_app.extensions["cobrabot"]


@blueprint.post("/webhooks/payments/<provider>")
def webhook(provider: str) -> Response:
    svc = services()
    if provider != "stripe":
        return json_error(404, "unknown_provider", f"no payment provider called {provider!r}")
    if not svc.settings.stripe_webhook_secret:
        return json_error(404, "provider_disabled", "STRIPE_WEBHOOK_SECRET is not configured")
    try:
        outcome = handle_stripe(
            request.get_data(), request.headers.get("Stripe-Signature", ""), svc.settings, svc.database, svc.clock
        )
    except InvalidSignature:
        logger.warning("payment webhook from %s with an invalid signature rejected", provider)
        return json_error(403, "invalid_signature", "the request signature did not verify")
    except BadPayload as exc:
        return json_error(400, "bad_payload", str(exc))
    return Response(f'{{"status": "{outcome.result}"}}', mimetype="application/json")


def _debtor(session: Session, token: str) -> Debtor:
    try:
        debtor_id = services().portal.verify(token, now=services().clock())
    except ExpiredPortalToken:
        abort(410)
    except InvalidPortalToken:
        abort(404)
    debtor = session.get(Debtor, debtor_id)
    if debtor is None:
        abort(404)
    return debtor


def _texts(session: Session, debtor: Debtor, keys: tuple[str, ...], **variables: object) -> dict[str, str]:
    renderer = TemplateRenderer.from_session(session)
    values = {"creditor_name": debtor.creditor.name, **variables}
    return {key: renderer.render(key, debtor.locale, "webchat", values) for key in keys}


@blueprint.get("/p/<token>/pay/<invoice_number>")
def pay(token: str, invoice_number: str) -> Response | str:
    """With Stripe configured: a single-purpose link for the invoice's balance and a redirect to Checkout.
    Without: the portal's own page with the amount and how to pay."""
    svc = services()
    now = svc.clock()
    with svc.database.session() as session:
        debtor = _debtor(session, token)
        invoice = session.scalars(
            select(Invoice).where(Invoice.debtor_id == debtor.id, Invoice.number == invoice_number)
        ).one_or_none()
        if invoice is None or invoice.status not in ("open", "disputed") or invoice.balance_minor <= 0:
            abort(404)
        amount = Money(invoice.balance_minor, invoice.currency)
        stripe_provider = StripeProvider.from_settings(svc.settings)
        if stripe_provider is not None:
            link = reusable_link(session, debtor.id, invoice.id, stripe_provider.name, amount, now)
            if link is None:
                link = create_link(
                    session,
                    svc.portal,
                    debtor,
                    amount,
                    "invoice",
                    invoice_id=invoice.id,
                    provider=stripe_provider,
                    now=now,
                    lifetime=CHECKOUT_LIFETIME,
                )
                session.commit()
            return redirect(link.url or "", code=303)
        texts = _texts(session, debtor, PAY_TEXTS, invoice_number=invoice.number, amount=amount)
        return render_template(
            "pay.html",
            texts=texts,
            lang=language_of(debtor.locale),
            token=token,
            invoice_number=invoice.number,
            amount=format_money(amount, debtor.locale),
            due=format_date(invoice.due_date, debtor.locale, "long"),
        )


@blueprint.get("/p/<token>/receipts/<int:payment_id>")
def receipt(token: str, payment_id: int) -> str:
    svc = services()
    with svc.database.session() as session:
        debtor = _debtor(session, token)
        payment = session.get(Payment, payment_id)
        if payment is None or payment.debtor_id != debtor.id or payment.status != "confirmed":
            abort(404)
        locale = debtor.locale
        numbers = dict(
            session.execute(
                select(Invoice.id, Invoice.number).where(
                    Invoice.id.in_([a.invoice_id for a in payment.allocations if a.invoice_id is not None])
                )
            )
            .tuples()
            .all()
        )
        lines = [
            {
                "invoice": numbers.get(allocation.invoice_id) if allocation.invoice_id else None,
                "amount": format_money(Money(allocation.amount_minor, payment.currency), locale),
            }
            for allocation in payment.allocations
        ]
        local_day = payment.received_at.astimezone(ZoneInfo(debtor.timezone)).date()
        return render_template(
            "receipt.html",
            texts=_texts(session, debtor, RECEIPT_TEXTS),
            lang=language_of(locale),
            creditor=debtor.creditor.name,
            payer=debtor.name,
            number=payment.id,
            date=format_date(local_day, locale, "long"),
            amount=format_money(Money(payment.amount_minor, payment.currency), locale),
            reference=payment.reference or payment.provider_payment_id,
            lines=lines,
        )
