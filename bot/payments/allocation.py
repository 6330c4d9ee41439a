"""Recording a received payment for a debtor and allocating it to their invoices.

The order is the one collectors and debtors both expect: the invoice the payer named first, then the oldest
due open invoice, and so on; whatever is left is kept as credit on account. Only invoices in the payment's
currency take part, so a USD payment never silently settles a CLP invoice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import audit
from bot.debtors import FieldError
from bot.domain import Money
from bot.models import Debtor, Installment, Invoice, Payment, PaymentAllocation, PaymentPlan
from bot.promises import keep_paid_promises

# Invoices the automatic order pays down; a payer may still name a disputed invoice explicitly.
AUTO_STATUSES = frozenset({"open"})
NAMED_STATUSES = frozenset({"open", "disputed"})


class Payable(Protocol):
    """The invoice fields allocation reads; the ORM Invoice and plain test doubles both fit."""

    @property
    def id(self) -> int: ...
    @property
    def balance_minor(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def due_date(self) -> date: ...
    @property
    def status(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Share:
    """Part of a payment going to one invoice, or to credit on account when `invoice_id` is None."""

    invoice_id: int | None
    amount_minor: int


def plan(amount_minor: int, currency: str, invoices: Sequence[Payable], named_id: int | None = None) -> list[Share]:
    """Split `amount_minor` over `invoices`: the named invoice first, then oldest due first, rest as credit."""
    if amount_minor <= 0:
        raise ValueError("a payment to allocate must be positive")
    shares: list[Share] = []
    remaining = amount_minor
    for invoice in _in_order(currency, invoices, named_id):
        if remaining == 0:
            break
        share = min(remaining, invoice.balance_minor)
        shares.append(Share(invoice.id, share))
        remaining -= share
    if remaining:
        shares.append(Share(None, remaining))
    return shares


def _in_order(currency: str, invoices: Sequence[Payable], named_id: int | None) -> list[Payable]:
    def payable(invoice: Payable, statuses: frozenset[str]) -> bool:
        return invoice.currency == currency and invoice.balance_minor > 0 and invoice.status in statuses

    named = [invoice for invoice in invoices if invoice.id == named_id and payable(invoice, NAMED_STATUSES)]
    rest = sorted(
        (invoice for invoice in invoices if invoice.id != named_id and payable(invoice, AUTO_STATUSES)),
        key=lambda invoice: (invoice.due_date, invoice.id),
    )
    return named + rest


def candidate_invoices(session: Session, debtor_id: int, currency: str) -> list[Invoice]:
    """The debtor's invoices that could take part, locked on PostgreSQL so two payments cannot both spend them."""
    statement = (
        select(Invoice)
        .where(
            Invoice.debtor_id == debtor_id,
            Invoice.currency == currency,
            Invoice.balance_minor > 0,
            Invoice.status.in_(NAMED_STATUSES),
        )
        .order_by(Invoice.due_date, Invoice.id)
        .with_for_update()
    )
    return list(session.scalars(statement.execution_options(populate_existing=True)))


def allocate(payment: Payment, invoices: Sequence[Invoice], named_id: int | None = None) -> list[PaymentAllocation]:
    """Apply `plan` to the ORM rows: lower balances, mark settled invoices paid, record each share."""
    by_id = {invoice.id: invoice for invoice in invoices}
    allocations = []
    for share in plan(payment.amount_minor, payment.currency, invoices, named_id):
        if share.invoice_id is not None:
            invoice = by_id[share.invoice_id]
            invoice.balance_minor -= share.amount_minor
            if invoice.balance_minor == 0:
                invoice.status = "paid"
        allocation = PaymentAllocation(invoice_id=share.invoice_id, amount_minor=share.amount_minor)
        payment.allocations.append(allocation)
        allocations.append(allocation)
    return allocations


class ReferenceConflict(Exception):
    """The provider's payment id was already recorded for a different debtor, amount or currency."""


@dataclass(frozen=True, slots=True)
class Recorded:
    payment: Payment
    created: bool


@dataclass(frozen=True, slots=True)
class ReceivedPayment:
    """A payment as a provider or an ERP reports it; `reference` is the provider's own payment id."""

    provider: str
    reference: str
    amount: Money
    received_at: datetime
    invoice_number: str | None = None
    raw: dict[str, Any] | None = None


def record_payment(session: Session, debtor: Debtor, received: ReceivedPayment, actor: str, now: datetime) -> Recorded:
    """Store and allocate a payment once; the same reference again returns the first payment unchanged.

    The caller should hold the debtor's row lock so two payments cannot spend the same balance.
    """
    existing = session.scalars(
        select(Payment).where(Payment.provider == received.provider, Payment.provider_payment_id == received.reference)
    ).one_or_none()
    if existing is not None:
        if (existing.debtor_id, existing.amount_minor, existing.currency) != (
            debtor.id,
            received.amount.minor,
            received.amount.currency,
        ):
            raise ReferenceConflict(f"reference {received.reference!r} was already used for another payment")
        return Recorded(existing, created=False)
    named_id = _named_invoice(session, debtor, received.invoice_number, received.amount.currency)
    payment = Payment(
        creditor_id=debtor.creditor_id,
        debtor_id=debtor.id,
        provider=received.provider,
        provider_payment_id=received.reference,
        reference=received.reference,
        amount_minor=received.amount.minor,
        currency=received.amount.currency,
        received_at=received.received_at,
        raw=received.raw or {},
    )
    session.add(payment)
    allocate(payment, candidate_invoices(session, debtor.id, received.amount.currency), named_id)
    event = audit.record(
        session,
        actor,
        "payment.recorded",
        payment,
        debtor_id=debtor.id,
        amount_minor=received.amount.minor,
        currency=received.amount.currency,
        invoice_number=received.invoice_number,
    )
    event.occurred_at = now
    session.flush()
    keep_paid_promises(session, now, debtor.id)
    return Recorded(payment, created=True)


def _named_invoice(session: Session, debtor: Debtor, number: str | None, currency: str) -> int | None:
    if number is None:
        return None
    invoice = session.scalars(
        select(Invoice).where(Invoice.debtor_id == debtor.id, Invoice.number == number)
    ).one_or_none()
    if invoice is None:
        raise FieldError("invoice_number", "no invoice with this number for this debtor")
    if invoice.currency != currency:
        raise FieldError("invoice_number", f"the invoice is in {invoice.currency}, the payment in {currency}")
    return invoice.id


@dataclass(frozen=True, slots=True)
class Reversal:
    """What one refund or chargeback changed: minor units taken back now, and per invoice."""

    reversed_minor: int
    invoices: dict[int, int]


def refund_payment(
    session: Session, payment: Payment, refunded_total_minor: int, actor: str, now: datetime, *, reason: str
) -> Reversal:
    """Bring `payment.refunded_minor` up to the provider's refunded total, reversing allocations newest first.

    Providers report the running total (Stripe's `amount_refunded`, Mercado Pago's `transaction_amount_refunded`),
    so a replayed or out-of-order notification reverses only the difference, never twice. Afterwards
    sum(allocations) == amount - refunded: the refunded money is owed again, none is created or lost.
    """
    target = min(max(refunded_total_minor, 0), payment.amount_minor)
    delta = target - payment.refunded_minor
    if delta <= 0:
        return Reversal(0, {})
    reopened = _reverse_newest_first(session, payment, delta)
    payment.refunded_minor = target
    if target == payment.amount_minor:
        payment.status = "refunded" if reason != "chargeback" else "charged_back"
    audit.record(
        session, actor, f"payment.{reason}", payment, amount_minor=delta, refunded_minor=target, invoices=reopened
    ).occurred_at = now
    return Reversal(delta, reopened)


def _reverse_newest_first(session: Session, payment: Payment, amount_minor: int) -> dict[int, int]:
    remaining = amount_minor
    per_invoice: dict[int, int] = {}
    for allocation in sorted(payment.allocations, key=lambda row: row.id, reverse=True):
        if remaining == 0:
            break
        taken = min(remaining, allocation.amount_minor)
        remaining -= taken
        if allocation.invoice_id is not None:
            _give_back_to_invoice(session, allocation.invoice_id, taken)
            per_invoice[allocation.invoice_id] = per_invoice.get(allocation.invoice_id, 0) + taken
        if allocation.installment_id is not None:
            _give_back_to_installment(session, allocation.installment_id, taken)
        if taken == allocation.amount_minor:
            payment.allocations.remove(allocation)  # amounts are positive by constraint: a spent share goes
        else:
            allocation.amount_minor -= taken
    session.flush()
    return per_invoice


def _give_back_to_invoice(session: Session, invoice_id: int, amount_minor: int) -> None:
    invoice = session.scalars(select(Invoice).where(Invoice.id == invoice_id).with_for_update()).one_or_none()
    if invoice is None:
        return
    invoice.balance_minor = min(invoice.amount_minor, invoice.balance_minor + amount_minor)
    if invoice.status == "paid" and invoice.balance_minor > 0:
        invoice.status = "open"


def _give_back_to_installment(session: Session, installment_id: int, amount_minor: int) -> None:
    installment = session.get(Installment, installment_id)
    if installment is None:
        return
    installment.paid_minor = max(installment.paid_minor - amount_minor, 0)
    if installment.status == "paid" and installment.paid_minor < installment.amount_minor:
        installment.status = "pending"
        plan = session.get(PaymentPlan, installment.plan_id)
        if plan is not None and plan.status == "completed":
            plan.status = "active"


def pay_installment(session: Session, payment: Payment, installment_id: int, now: datetime) -> Installment | None:
    """Credit a payment made through an installment's link to that installment (its allocations name it),
    and complete the plan when every installment is paid."""
    installment = session.get(Installment, installment_id)
    if installment is None:
        return None
    for allocation in payment.allocations:
        allocation.installment_id = installment.id
    installment.paid_minor = min(installment.amount_minor, installment.paid_minor + payment.amount_minor)
    if installment.paid_minor >= installment.amount_minor:
        installment.status = "paid"
    plan = session.get_one(PaymentPlan, installment.plan_id)
    if plan.status == "active" and all(item.status == "paid" for item in plan.installments):
        plan.status = "completed"
        audit.record(session, "system", "plan.completed", plan, payment_id=payment.id).occurred_at = now
    return installment
