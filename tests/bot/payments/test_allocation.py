"""Payment allocation: the named invoice first, then oldest due first, the rest as credit; one currency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.debtors import FieldError
from bot.domain import Money
from bot.models import AuditEvent, Debtor, Invoice, Payment, PaymentAllocation
from bot.payments.allocation import ReceivedPayment, ReferenceConflict, Share, allocate, plan, record_payment
from bot.store import Database

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


@dataclass
class Bill:
    id: int
    balance_minor: int
    due_date: date
    currency: str = "CLP"
    status: str = "open"


OLD = Bill(1, 45990, date(2026, 12, 5))
NEW = Bill(2, 30000, date(2027, 1, 5))


def test_partial_payment_goes_to_the_oldest_due_invoice() -> None:
    assert plan(20000, "CLP", [NEW, OLD]) == [Share(1, 20000)]


def test_exact_payment_settles_invoices_in_due_order() -> None:
    assert plan(75990, "CLP", [NEW, OLD]) == [Share(1, 45990), Share(2, 30000)]


def test_overpayment_keeps_the_rest_as_credit() -> None:
    assert plan(80000, "CLP", [NEW, OLD]) == [Share(1, 45990), Share(2, 30000), Share(None, 4010)]


def test_no_invoices_means_all_credit() -> None:
    assert plan(500, "CLP", []) == [Share(None, 500)]


def test_named_invoice_is_paid_first_then_the_oldest() -> None:
    assert plan(40000, "CLP", [OLD, NEW], named_id=2) == [Share(2, 30000), Share(1, 10000)]


def test_only_invoices_in_the_payment_currency_take_part() -> None:
    dollars = Bill(3, 8025, date(2026, 1, 1), currency="USD")
    assert plan(10000, "USD", [OLD, dollars, NEW]) == [Share(3, 8025), Share(None, 1975)]
    assert plan(100, "CLP", [dollars, OLD]) == [Share(1, 100)]


def test_disputed_invoices_are_skipped_unless_named_and_settled_ones_always() -> None:
    disputed = Bill(3, 5000, date(2026, 1, 1), status="disputed")
    paid = Bill(4, 0, date(2025, 1, 1), status="paid")
    assert plan(1000, "CLP", [disputed, paid, OLD]) == [Share(1, 1000)]
    assert plan(6000, "CLP", [disputed, paid, OLD], named_id=3) == [Share(3, 5000), Share(1, 1000)]
    assert plan(1000, "CLP", [paid, OLD], named_id=4) == [Share(1, 1000)]


def test_same_due_date_is_ordered_by_id() -> None:
    twin = Bill(0, 100, OLD.due_date)
    assert plan(200, "CLP", [OLD, twin]) == [Share(0, 100), Share(1, 100)]


@pytest.mark.parametrize("amount", [0, -1])
def test_a_payment_must_be_positive(amount: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        plan(amount, "CLP", [OLD])


bills = st.lists(
    st.builds(
        Bill,
        id=st.integers(1, 10_000),
        balance_minor=st.integers(0, 10**9),
        due_date=st.dates(),
        currency=st.sampled_from(["CLP", "USD"]),
        status=st.sampled_from(["open", "disputed", "paid"]),
    ),
    max_size=8,
    unique_by=lambda bill: bill.id,
)


@given(amount=st.integers(1, 10**10), invoices=bills, named=st.none() | st.integers(1, 10_000))
def test_shares_add_up_and_never_exceed_a_balance(amount: int, invoices: list[Bill], named: int | None) -> None:
    shares = plan(amount, "CLP", invoices, named)
    by_id = {bill.id: bill for bill in invoices}
    assert sum(share.amount_minor for share in shares) == amount
    assert all(share.amount_minor > 0 for share in shares)
    for share in shares:
        if share.invoice_id is not None:
            assert by_id[share.invoice_id].currency == "CLP"
            assert share.amount_minor <= by_id[share.invoice_id].balance_minor
    assert [share.invoice_id for share in shares].count(None) <= 1


def test_allocate_lowers_balances_marks_paid_and_records_shares() -> None:
    first = Invoice(id=1, balance_minor=100, currency="CLP", due_date=date(2026, 1, 1), status="open")
    second = Invoice(id=2, balance_minor=100, currency="CLP", due_date=date(2026, 2, 1), status="open")
    payment = Payment(amount_minor=150, currency="CLP")
    rows = allocate(payment, [second, first])
    assert [(row.invoice_id, row.amount_minor) for row in rows] == [(1, 100), (2, 50)]
    assert payment.allocations == rows
    assert (first.balance_minor, first.status, second.balance_minor, second.status) == (0, "paid", 50, "open")


# -------------------------------------------------------------------------------- record_payment (DB)


def received(reference: str = "TRX-1", minor: int = 20000, invoice_number: str | None = None) -> ReceivedPayment:
    return ReceivedPayment("api", reference, Money(minor, "CLP"), NOW, invoice_number)


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_record_payment_stores_allocates_and_audits(db: Database, make_debtor: Callable[..., Debtor]) -> None:
    debtor = make_debtor()
    with db.session() as session:
        debtor = session.get(Debtor, debtor.id)
        recorded = record_payment(session, debtor, received(), actor="test", now=NOW)
        session.commit()
        assert recorded.created
        assert [(a.amount_minor, a.invoice_id is not None) for a in recorded.payment.allocations] == [(20000, True)]
        assert session.scalars(select(Invoice.balance_minor)).one() == 25990
        event = session.scalars(select(AuditEvent)).one()
        assert (event.actor, event.action, event.occurred_at) == ("test", "payment.recorded", NOW)


def test_record_payment_twice_returns_the_first_and_changes_nothing(db: Database, make_debtor: Callable) -> None:
    debtor = make_debtor()
    with db.session() as session:
        debtor = session.get(Debtor, debtor.id)
        first = record_payment(session, debtor, received(), actor="test", now=NOW)
        session.commit()
        again = record_payment(session, debtor, received(), actor="test", now=NOW)
        assert not again.created and again.payment.id == first.payment.id
        assert not session.new and not session.dirty
        assert (count(session, Payment), count(session, PaymentAllocation), count(session, AuditEvent)) == (1, 1, 1)


@pytest.mark.parametrize(
    "retry", [received(minor=1), received(reference="TRX-1").__class__("api", "TRX-1", Money(20000, "USD"), NOW)]
)
def test_record_payment_refuses_a_reused_reference(db: Database, make_debtor: Callable, retry: ReceivedPayment) -> None:
    debtor = make_debtor()
    with db.session() as session:
        debtor = session.get(Debtor, debtor.id)
        record_payment(session, debtor, received(), actor="test", now=NOW)
        session.commit()
        with pytest.raises(ReferenceConflict):
            record_payment(session, debtor, retry, actor="test", now=NOW)


@pytest.mark.parametrize(
    ("invoice_number", "reason"),
    [("F-404", "no invoice"), ("U-1", "the invoice is in USD")],
)
def test_record_payment_checks_the_named_invoice(db: Database, make_debtor: Callable, invoice_number: str, reason: str):
    debtor = make_debtor(
        invoices=[
            {"number": "F-1", "amount": "45990", "due_date": date(2026, 12, 5)},
            {"number": "U-1", "amount": "10.00", "currency": "USD", "due_date": date(2026, 12, 5)},
        ]
    )
    with db.session() as session:
        debtor = session.get(Debtor, debtor.id)
        with pytest.raises(FieldError, match=reason) as raised:
            record_payment(session, debtor, received(invoice_number=invoice_number), actor="test", now=NOW)
        assert raised.value.field == "invoice_number"
