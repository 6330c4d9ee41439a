"""Payment provider notifications, framework-free: verify the signature, then record the payment once.

Everything a paid checkout changes happens in ONE transaction: the event's idempotency key, the payment and
its allocation (which keeps promises), the link marked paid, the debtor's receipt message in the outbox and
the cancelled reminders of the invoices it settled. A replayed event finds its key and changes nothing.
Refunds and chargebacks reverse allocations (bot/payments/allocation.py `refund_payment`) the same way.

Stripe signs the whole event. Mercado Pago signs only the notification's ids, so its payment is read back
from Mercado Pago's API (outside any transaction) and only what that API says is trusted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe
from mercadopago.webhook.validator import InvalidWebhookSignatureError, WebhookSignatureValidator
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain import BadPayload, Clock, InvalidSignature, Money
from bot.models import Debtor, Invoice, Payment, PaymentLink, ProcessedEvent
from bot.payments.allocation import ReceivedPayment, pay_installment, record_payment, refund_payment
from bot.payments.links import mark_expired, mark_paid
from bot.payments.mercadopago_provider import MercadoPagoProvider, from_mercadopago_amount, link_id_of
from bot.payments.settlement import cancel_reminders_of_paid_invoices, queue_receipt
from bot.payments.stripe_provider import UnsupportedAmount, from_stripe_amount
from bot.store import Database

logger = logging.getLogger(__name__)
PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
# Mercado Pago's x-signature carries `ts` in seconds; older notifications are refused as replays.
MERCADOPAGO_TOLERANCE_SECONDS = 300
MERCADOPAGO_REVERSED = {"refunded": "refund", "charged_back": "chargeback"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one notification: recorded, duplicate (seen before) or ignored (not ours to act on)."""

    result: str
    payment_id: int | None = None


def handle_stripe(
    payload: bytes, signature_header: str, settings: Settings, database: Database, clock: Clock
) -> Outcome:
    """Raises InvalidSignature (HTTP 403) for a forged or stale event, BadPayload (HTTP 400) for a malformed one."""
    event = _verified_event(payload, signature_header, settings.stripe_webhook_secret)
    now = clock()
    with database.session() as session:
        if not _claim(session, "stripe", event["id"], now):
            logger.info("stripe event %s already processed", event["id"])
            return Outcome("duplicate")
        outcome = _apply(session, event, settings, now)
        session.commit()
    return outcome


def _verified_event(payload: bytes, signature_header: str, secret: str | None) -> dict[str, Any]:
    try:
        stripe.Webhook.construct_event(payload, signature_header, secret)
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature("the Stripe-Signature header did not verify") from exc
    except ValueError as exc:  # signed, but not JSON
        raise BadPayload("the event is not valid JSON") from exc
    # Read the verified bytes as plain dicts: the fields we need, no SDK object semantics.
    event = json.loads(payload)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise BadPayload("the event has no id or type")
    return event


def _claim(session: Session, source: str, event_id: str, now: datetime) -> bool:
    """Insert the idempotency key, or learn it was already there (insert-or-ignore on both databases)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(ProcessedEvent)
        .values(source=source, event_id=event_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(ProcessedEvent.id)
    )
    # RETURNING, not rowcount: the ORM-enabled insert does not report rowcount reliably on psycopg.
    return session.execute(statement).scalar() is not None


def _apply(session: Session, event: dict[str, Any], settings: Settings, now: datetime) -> Outcome:
    obj = (event.get("data") or {}).get("object") or {}
    if event["type"] == "charge.refunded":
        return _stripe_refund(session, event, obj, now)
    if event["type"] == "checkout.session.expired":
        return _stripe_expired(session, event, obj, now)
    if event["type"] not in PAID_EVENTS or obj.get("payment_status") != "paid":
        return Outcome("ignored")
    link = _link_of(session, obj)
    if link is None:
        logger.warning("stripe event %s names no payment link of ours; ignored", event["id"])
        return Outcome("ignored")
    try:
        amount = from_stripe_amount(int(obj["amount_total"]), str(obj["currency"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPayload("the checkout session has no usable amount_total/currency") from exc
    reference = str(obj.get("payment_intent") or obj["id"])
    raw = {"event_id": event["id"], "checkout_session": obj.get("id"), "payment_link_id": link.id}
    return _record_link_payment(session, link, "stripe", reference, amount, raw, settings, now)


def _stripe_refund(session: Session, event: dict[str, Any], charge: dict[str, Any], now: datetime) -> Outcome:
    """`charge.refunded` carries the charge's running `amount_refunded` (full or partial, any number of times)."""
    payment = _payment_of(session, "stripe", charge.get("payment_intent"))
    if payment is None:
        logger.warning("stripe refund event %s names no payment of ours; ignored", event["id"])
        return Outcome("ignored")
    try:
        refunded = from_stripe_amount(int(charge["amount_refunded"]), str(charge["currency"]))
    except (KeyError, TypeError, ValueError, UnsupportedAmount) as exc:
        raise BadPayload("the charge has no usable amount_refunded/currency") from exc
    if refunded.currency != payment.currency:
        raise BadPayload(f"the refund is in {refunded.currency}, the payment in {payment.currency}")
    refund_payment(session, payment, refunded.minor, "stripe", now, reason="refund")
    return Outcome("refunded", payment.id)


def _stripe_expired(session: Session, event: dict[str, Any], checkout: dict[str, Any], now: datetime) -> Outcome:
    link = _link_of(session, checkout)
    if link is None:
        return Outcome("ignored")
    mark_expired(session, link, now, reason=f"stripe {event['type']}")
    return Outcome("expired")


def _payment_of(session: Session, provider: str, reference: object) -> Payment | None:
    if not reference:
        return None
    statement = select(Payment).where(Payment.provider == provider, Payment.provider_payment_id == str(reference))
    payment = session.scalars(statement.with_for_update()).one_or_none()
    if payment is not None and payment.debtor_id is not None:
        # The debtor's lock, as for a new payment: reversing and allocating must not interleave.
        session.scalars(select(Debtor.id).where(Debtor.id == payment.debtor_id).with_for_update()).one()
    return payment


def _record_link_payment(
    session: Session,
    link: PaymentLink,
    provider: str,
    reference: str,
    amount: Money,
    raw: dict[str, Any],
    settings: Settings,
    now: datetime,
) -> Outcome:
    """A paid checkout of `link`: the payment recorded once, allocated (link's invoice or installment first)."""
    debtor = session.scalars(select(Debtor).where(Debtor.id == link.debtor_id).with_for_update()).one()
    received = ReceivedPayment(
        provider=provider,
        reference=reference,
        amount=amount,
        received_at=now,
        invoice_number=_invoice_number(session, link, amount.currency),
        raw=raw,
    )
    recorded = record_payment(session, debtor, received, provider, now)
    if link.status != "paid":
        mark_paid(session, link, recorded.payment.id, now)
    if recorded.created:
        if link.installment_id is not None:
            pay_installment(session, recorded.payment, link.installment_id, now)
        cancel_reminders_of_paid_invoices(session, recorded.payment)
        queue_receipt(session, debtor, recorded.payment, settings, now)
    return Outcome("recorded", recorded.payment.id)


def _link_of(session: Session, checkout: dict[str, Any]) -> PaymentLink | None:
    metadata = checkout.get("metadata") or {}
    link_id = str(metadata.get("payment_link_id") or checkout.get("client_reference_id") or "")
    if not link_id.isdigit():
        return None
    link = session.scalars(select(PaymentLink).where(PaymentLink.id == int(link_id)).with_for_update()).one_or_none()
    if link is None or str(metadata.get("debtor_id", link.debtor_id)) != str(link.debtor_id):
        return None
    return link


def _invoice_number(session: Session, link: PaymentLink, currency: str) -> str | None:
    """The link's invoice is paid first, as long as it still exists and is in the paid currency."""
    if link.invoice_id is None:
        return None
    invoice = session.get(Invoice, link.invoice_id)
    return invoice.number if invoice is not None and invoice.currency == currency else None


# --- Mercado Pago ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MercadoPagoNotification:
    """The parts of a Mercado Pago webhook request the signature covers or we read."""

    body: bytes
    data_id: str | None  # the `data.id` query parameter, as signed
    signature: str
    request_id: str


def handle_mercadopago(
    notification: MercadoPagoNotification,
    settings: Settings,
    database: Database,
    clock: Clock,
    provider: MercadoPagoProvider,
) -> Outcome:
    """Raises InvalidSignature (403) for a forged or stale notification, BadPayload (400) for a malformed one
    and MercadoPagoFailure when the payment cannot be read back (the route answers 502; Mercado Pago retries)."""
    _verify_mercadopago(notification, settings.mercadopago_webhook_secret or "", clock)
    body = _mercadopago_body(notification)
    if body.get("type") != "payment":
        return Outcome("ignored")
    notification_id = str(body.get("id") or notification.request_id)
    if _already_processed(database, notification_id):
        return Outcome("duplicate")
    payment_id = str((body.get("data") or {}).get("id"))
    remote = provider.fetch_payment(payment_id)  # no transaction is open during the HTTP call
    now = clock()
    with database.session() as session:
        if not _claim(session, "mercadopago", notification_id, now):
            return Outcome("duplicate")
        outcome = _apply_mercadopago(session, remote, settings, now) if remote else Outcome("ignored")
        session.commit()
    return outcome


def _verify_mercadopago(notification: MercadoPagoNotification, secret: str, clock: Clock) -> None:
    if not secret:
        raise InvalidSignature("COBRABOT_MERCADOPAGO_WEBHOOK_SECRET is not configured")
    try:
        WebhookSignatureValidator.validate(
            notification.signature,
            notification.request_id,
            notification.data_id,
            secret,
            tolerance_seconds=MERCADOPAGO_TOLERANCE_SECONDS,
            now=lambda: int(clock().timestamp() * 1000),
        )
    except InvalidWebhookSignatureError as exc:
        raise InvalidSignature(f"the x-signature header did not verify ({exc.reason.value})") from exc


def _mercadopago_body(notification: MercadoPagoNotification) -> dict[str, Any]:
    try:
        body = json.loads(notification.body or b"null")
    except ValueError as exc:
        raise BadPayload("the notification is not valid JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict) or not body["data"].get("id"):
        raise BadPayload("the notification has no data.id")
    # Only the query's data.id is signed: a body naming another payment would smuggle it past the signature.
    if notification.data_id is None or str(body["data"]["id"]) != notification.data_id:
        raise BadPayload("the body's data.id differs from the signed data.id query parameter")
    return body


def _already_processed(database: Database, notification_id: str) -> bool:
    with database.session() as session:
        statement = select(ProcessedEvent.id).where(
            ProcessedEvent.source == "mercadopago", ProcessedEvent.event_id == notification_id
        )
        return session.scalar(statement) is not None


def _apply_mercadopago(session: Session, remote: dict[str, Any], settings: Settings, now: datetime) -> Outcome:
    status = remote.get("status")
    reference = str(remote.get("id") or "")
    if status in MERCADOPAGO_REVERSED:
        return _mercadopago_reversal(session, remote, MERCADOPAGO_REVERSED[str(status)], now)
    if status != "approved" or not reference:
        return Outcome("ignored")  # pending, in_process, rejected, cancelled: nothing was paid
    link_id = link_id_of(remote.get("external_reference"))
    link = (
        session.scalars(select(PaymentLink).where(PaymentLink.id == link_id).with_for_update()).one_or_none()
        if link_id is not None
        else None
    )
    if link is None:
        logger.warning("mercadopago payment %s names no payment link of ours; ignored", reference)
        return Outcome("ignored")
    amount = _mercadopago_money(remote, "transaction_amount")
    raw = {"mercadopago_payment": reference, "payment_link_id": link.id, "status_detail": remote.get("status_detail")}
    outcome = _record_link_payment(session, link, "mercadopago", reference, amount, raw, settings, now)
    # An approved payment can still carry a partial refund (status_detail "partially_refunded").
    refunded = _mercadopago_money(remote, "transaction_amount_refunded", default=0)
    payment = session.get_one(Payment, outcome.payment_id)
    if refunded.minor > payment.refunded_minor:
        refund_payment(session, payment, refunded.minor, "mercadopago", now, reason="refund")
    return outcome


def _mercadopago_reversal(session: Session, remote: dict[str, Any], reason: str, now: datetime) -> Outcome:
    payment = _payment_of(session, "mercadopago", remote.get("id"))
    if payment is None:
        return Outcome("ignored")
    if reason == "chargeback":  # the whole amount goes back to the card holder
        total = payment.amount_minor
    else:
        total = _mercadopago_money(remote, "transaction_amount_refunded").minor
    refund_payment(session, payment, total, "mercadopago", now, reason=reason)
    return Outcome("refunded", payment.id)


def _mercadopago_money(remote: dict[str, Any], field: str, default: int | None = None) -> Money:
    value = remote.get(field, default)
    try:
        return from_mercadopago_amount(value, str(remote["currency_id"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPayload(f"the Mercado Pago payment has no usable {field}/currency_id") from exc
