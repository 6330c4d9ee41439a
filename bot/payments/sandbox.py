"""The sandbox payment provider: the demo's Pay button settles an invoice at once, with no money moving.

Enabled only by `COBRABOT_SANDBOX_PAYMENTS=true` (`cobrabot serve --demo` sets it). It exercises the same path a
real provider's confirmation takes — the payment recorded once, allocated, the invoice's reminders cancelled,
the receipt queued to the debtor's channel — so a demo shows the whole loop without a Stripe or Mercado Pago
account. The idempotency key comes from the page, so a double-click or a reload pays once.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain import Money
from bot.models import Debtor, Invoice, Payment
from bot.payments.allocation import ReceivedPayment, record_payment
from bot.payments.settlement import cancel_reminders_of_paid_invoices, queue_receipt

PROVIDER = "sandbox"
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class SandboxRefused(ValueError):
    """The sandbox payment cannot be made: disabled, a bad key, or nothing left to pay."""


def pay_invoice(
    session: Session, debtor_id: int, invoice_number: str, key: str, settings: Settings, now: datetime
) -> Payment:
    """Pay the invoice's whole balance in the sandbox; the same key again returns the first payment."""
    if not settings.sandbox_payments:
        raise SandboxRefused("sandbox payments are disabled (COBRABOT_SANDBOX_PAYMENTS)")
    if not IDEMPOTENCY_KEY.match(key):
        raise SandboxRefused("a payment needs the page's idempotency key")
    # Row lock on the debtor (PostgreSQL) so two payments cannot spend the same balance.
    debtor = session.scalars(select(Debtor).where(Debtor.id == debtor_id).with_for_update()).one()
    reference = f"sandbox-{key}"
    if paid := session.scalars(
        select(Payment).where(Payment.provider == PROVIDER, Payment.provider_payment_id == reference)
    ).first():
        return paid
    invoice = session.scalars(
        select(Invoice).where(Invoice.debtor_id == debtor.id, Invoice.number == invoice_number)
    ).one_or_none()
    if invoice is None or invoice.status not in ("open", "disputed") or invoice.balance_minor <= 0:
        raise SandboxRefused(f"invoice {invoice_number} has nothing left to pay")
    received = ReceivedPayment(
        provider=PROVIDER,
        reference=reference,
        amount=Money(invoice.balance_minor, invoice.currency),
        received_at=now,
        invoice_number=invoice.number,
        raw={"sandbox": True},
    )
    recorded = record_payment(session, debtor, received, f"debtor:{debtor.id}", now)
    if recorded.created:
        cancel_reminders_of_paid_invoices(session, recorded.payment)
        queue_receipt(session, debtor, recorded.payment, settings, now)
    return recorded.payment
