"""Payments at the HTTP edge: provider webhooks, the portal's Pay button and printable receipts."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain import BadPayload, InvalidSignature, Money
from bot.i18n import format_date, format_money, language_of
from bot.models import Debtor, Invoice, Payment
from bot.payments import sandbox
from bot.payments.links import CheckoutFailed, open_checkout, reusable_link
from bot.payments.mercadopago_provider import MercadoPagoFailure, MercadoPagoProvider
from bot.payments.providers import checkout_provider
from bot.payments.webhook import MercadoPagoNotification, Outcome, handle_mercadopago, handle_stripe
from bot.portal import ExpiredPortalToken, InvalidPortalToken
from bot.services import Services
from bot.templates import TemplateRenderer
from bot.web.errors import json_error

logger = logging.getLogger(__name__)
blueprint = Blueprint("payments", __name__)
# Stripe expires a Checkout Session after 24 hours; the link must not outlive it (Mercado Pago's preference is
# given the link's expiry).
CHECKOUT_LIFETIME = timedelta(hours=23)
PAY_TEXTS = ("pay_title", "pay_amount", "pay_instructions", "pay_back", "pay_sandbox_button", "pay_sandbox_note")
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
    if provider not in ("stripe", "mercadopago"):
        return json_error(404, "unknown_provider", f"no payment provider called {provider!r}")
    try:
        outcome = _stripe_webhook() if provider == "stripe" else _mercadopago_webhook()
    except InvalidSignature as exc:
        logger.warning("payment webhook from %s with an invalid signature rejected: %s", provider, exc)
        return json_error(403, "invalid_signature", "the request signature did not verify")
    except BadPayload as exc:
        return json_error(400, "bad_payload", str(exc))
    except MercadoPagoFailure as exc:
        # Not the sender's fault: a non-2xx answer makes Mercado Pago deliver the notification again later.
        logger.warning("mercadopago notification not processed: %s", exc)
        return json_error(502, "provider_unavailable", "the payment could not be read from Mercado Pago")
    if isinstance(outcome, Response):
        return outcome
    return Response(f'{{"status": "{outcome.result}"}}', mimetype="application/json")


def _stripe_webhook() -> Outcome | Response:
    svc = services()
    if not svc.settings.stripe_webhook_secret:
        return json_error(404, "provider_disabled", "STRIPE_WEBHOOK_SECRET is not configured")
    return handle_stripe(
        request.get_data(), request.headers.get("Stripe-Signature", ""), svc.settings, svc.database, svc.clock
    )


def _mercadopago_webhook() -> Outcome | Response:
    svc = services()
    provider = MercadoPagoProvider.from_settings(svc.settings)
    if provider is None or not svc.settings.mercadopago_webhook_secret:
        message = "COBRABOT_MERCADOPAGO_ACCESS_TOKEN/COBRABOT_MERCADOPAGO_WEBHOOK_SECRET are not configured"
        return json_error(404, "provider_disabled", message)
    notification = MercadoPagoNotification(
        body=request.get_data(),
        data_id=request.args.get("data.id"),
        signature=request.headers.get("x-signature", ""),
        request_id=request.headers.get("x-request-id", ""),
    )
    return handle_mercadopago(notification, svc.settings, svc.database, svc.clock, provider)


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
    """With a hosted checkout configured (Stripe or Mercado Pago): a single-purpose link for the invoice's
    balance and a redirect to the checkout. Without (or if the checkout cannot be opened): the portal's own page
    with the amount and how to pay."""
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
        provider = checkout_provider(svc.settings, debtor.creditor)
        if provider is not None:
            link = reusable_link(session, debtor.id, invoice.id, provider.name, amount, now)
            if link is not None:
                return redirect(link.url or "", code=303)
        page = _pay_page(session, debtor, token, invoice, amount)
        debtor_id, invoice_id = debtor.id, invoice.id
    # The session is closed: the provider's HTTP call must not hold a transaction (SQLite's write lock).
    if provider is None:
        return page
    try:
        link = open_checkout(
            svc.database,
            svc.portal,
            debtor_id,
            amount,
            "invoice",
            invoice_id=invoice_id,
            provider=provider,
            now=now,
            lifetime=CHECKOUT_LIFETIME,
        )
    except CheckoutFailed as exc:
        logger.warning("pay button fell back to the portal page: %s", exc)
        return page
    return redirect(link.url or "", code=303)


@blueprint.post("/p/<token>/pay/<invoice_number>/sandbox")
def pay_in_sandbox(token: str, invoice_number: str) -> Response:
    """The demo's Pay button (COBRABOT_SANDBOX_PAYMENTS): settle the invoice, then show the receipt."""
    svc = services()
    if not svc.settings.sandbox_payments:
        abort(404)
    with svc.database.unit_of_work() as uow:
        debtor = _debtor(uow.session, token)
        try:
            payment = sandbox.pay_invoice(
                uow.session, debtor.id, invoice_number, request.form.get("key", ""), svc.settings, svc.clock()
            )
        except sandbox.SandboxRefused as exc:
            abort(400, description=str(exc))
        uow.commit()
    return redirect(f"/p/{token}/receipts/{payment.id}", code=303)


def _pay_page(session: Session, debtor: Debtor, token: str, invoice: Invoice, amount: Money) -> str:
    return render_template(
        "pay.html",
        sandbox_key=secrets.token_urlsafe(24) if services().settings.sandbox_payments else None,
        texts=_texts(session, debtor, PAY_TEXTS, invoice_number=invoice.number, amount=amount),
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
