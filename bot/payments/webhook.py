"""Payment provider notifications, framework-free: verify the signature, then record the payment once.

Everything a paid checkout changes happens in ONE transaction: the event's idempotency key, the payment and
its allocation (which keeps promises), the link marked paid, the debtor's receipt message in the outbox and
the cancelled reminders of the invoices it settled. A replayed event finds its key and changes nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain import BadPayload, Clock, InvalidSignature, Money
from bot.models import Debtor, Installment, Invoice, Payment, PaymentLink, ProcessedEvent, ScheduledReminder
from bot.outreach import queue_bot_message
from bot.payments.allocation import ReceivedPayment, record_payment
from bot.payments.links import mark_paid
from bot.payments.stripe_provider import from_stripe_amount
from bot.portal import PortalTokens
from bot.store import Database

logger = logging.getLogger(__name__)
PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})


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
    checkout = (event.get("data") or {}).get("object") or {}
    if event["type"] not in PAID_EVENTS or checkout.get("payment_status") != "paid":
        return Outcome("ignored")
    link = _link_of(session, checkout)
    if link is None:
        logger.warning("stripe event %s names no payment link of ours; ignored", event["id"])
        return Outcome("ignored")
    debtor = session.scalars(select(Debtor).where(Debtor.id == link.debtor_id).with_for_update()).one()
    try:
        amount = from_stripe_amount(int(checkout["amount_total"]), str(checkout["currency"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPayload("the checkout session has no usable amount_total/currency") from exc
    received = ReceivedPayment(
        provider="stripe",
        reference=str(checkout.get("payment_intent") or checkout["id"]),
        amount=amount,
        received_at=now,
        invoice_number=_invoice_number(session, link, amount.currency),
        raw={"event_id": event["id"], "checkout_session": checkout.get("id"), "payment_link_id": link.id},
    )
    recorded = record_payment(session, debtor, received, "stripe", now)
    if link.status != "paid":
        mark_paid(session, link, recorded.payment.id, now)
    if recorded.created:
        _pay_installment(session, link, amount.minor)
        _cancel_reminders_of_paid_invoices(session, recorded.payment)
        _queue_receipt(session, debtor, recorded.payment, settings, now)
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


def _pay_installment(session: Session, link: PaymentLink, amount_minor: int) -> None:
    if link.installment_id is None:
        return
    installment = session.get(Installment, link.installment_id)
    if installment is None:
        return
    installment.paid_minor = min(installment.amount_minor, installment.paid_minor + amount_minor)
    if installment.paid_minor >= installment.amount_minor:
        installment.status = "paid"


def _cancel_reminders_of_paid_invoices(session: Session, payment: Payment) -> None:
    touched = [allocation.invoice_id for allocation in payment.allocations if allocation.invoice_id is not None]
    paid_ids = list(session.scalars(select(Invoice.id).where(Invoice.id.in_(touched), Invoice.status == "paid")))
    if paid_ids:
        session.execute(
            update(ScheduledReminder)
            .where(ScheduledReminder.invoice_id.in_(paid_ids), ScheduledReminder.status == "planned")
            .values(status="cancelled", reason="invoice paid")
        )


def _queue_receipt(session: Session, debtor: Debtor, payment: Payment, settings: Settings, now: datetime) -> None:
    tokens = PortalTokens(settings.secret_key, settings.public_url)
    token, _ = tokens.issue(debtor.id, timedelta(days=settings.portal_link_days), now=now)
    variables = {
        "amount": Money(payment.amount_minor, payment.currency),
        "creditor_name": debtor.creditor.name,
        "receipt_link": f"{tokens.url(token)}/receipts/{payment.id}",
    }
    queued = queue_bot_message(session, debtor, "payment_received", variables, now)
    logger.info("payment %s receipt message: %s", payment.id, queued.reason)
