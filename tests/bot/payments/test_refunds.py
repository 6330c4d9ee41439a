"""Refunds: Stripe's `charge.refunded` (full, partial, repeated) reverses allocations newest first, so what was
refunded is owed again and no money is created or lost."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot.config import Settings
from bot.domain import BadPayload, Money
from bot.models import AuditEvent, Creditor, Debtor, Invoice, Payment
from bot.payments.allocation import ReceivedPayment, record_payment, refund_payment
from bot.payments.links import create_link
from bot.payments.webhook import handle_stripe
from bot.portal import PortalTokens
from bot.store import Database
from tests.bot.payments.test_stripe import checkout_completed, sign, stripe_settings  # noqa: F401 (fixture)
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET, FixedClock

TOKENS = PortalTokens(TEST_SECRET, TEST_PUBLIC_URL)


def charge_refunded(amount_refunded: int, event_id: str = "evt_refund_1", **overrides: Any) -> bytes:
    charge = {
        "id": "ch_test_1",
        "object": "charge",
        "payment_intent": "pi_test_1",
        "amount": 80000,
        "amount_refunded": amount_refunded,
        "currency": "clp",
        "refunded": amount_refunded == 80000,
    } | overrides
    return json.dumps(
        {"id": event_id, "object": "event", "type": "charge.refunded", "data": {"object": charge}}
    ).encode()


@pytest.fixture
def settled(db: Database, make_debtor: Callable[..., Debtor], stripe_settings: Settings, clock: FixedClock) -> int:  # noqa: F811
    """A settlement of 80 000 paid through Stripe: F-2 (older, 30 000), then F-1 (45 990), then 4 010 credit."""
    debtor = make_debtor(
        invoices=[
            {"number": "F-1", "amount": "45990", "due_date": date(2026, 12, 5)},
            {"number": "F-2", "amount": "30000", "due_date": date(2026, 11, 1)},
        ]
    )
    with db.session() as session:
        link = create_link(session, TOKENS, session.get_one(Debtor, debtor.id), Money(80000, "CLP"), "settlement",
                           now=clock())  # fmt: skip
        session.commit()
    payload = checkout_completed(link, amount_total=80000)
    outcome = handle_stripe(payload, sign(payload), stripe_settings, db, clock)
    assert outcome.result == "recorded" and outcome.payment_id is not None
    return outcome.payment_id


def _state(db: Database, payment_id: int) -> tuple[int, str, list[tuple[str | None, int]], dict[str, tuple[str, int]]]:
    with db.session() as session:
        payment = session.get_one(Payment, payment_id)
        numbers = dict(session.execute(select(Invoice.id, Invoice.number)).tuples().all())
        shares = [(numbers.get(a.invoice_id) if a.invoice_id else None, a.amount_minor) for a in payment.allocations]
        invoices = {row.number: (row.status, row.balance_minor) for row in session.scalars(select(Invoice))}
        assert sum(amount for _, amount in shares) == payment.amount_minor - payment.refunded_minor
        return payment.refunded_minor, payment.status, sorted(shares, key=str), invoices


def _refund(db: Database, settings_: Settings, clock: FixedClock, refunded: int, event_id: str) -> str:
    payload = charge_refunded(refunded, event_id)
    return handle_stripe(payload, sign(payload), settings_, db, clock).result


def test_partial_refunds_reverse_newest_allocations_first_then_a_full_refund_reopens_everything(
    db: Database,
    settled: int,
    stripe_settings: Settings,  # noqa: F811
    clock: FixedClock,
) -> None:
    assert _state(db, settled) == (0, "confirmed", [("F-1", 45990), ("F-2", 30000), (None, 4010)],
                                   {"F-1": ("paid", 0), "F-2": ("paid", 0)})  # fmt: skip

    assert _refund(db, stripe_settings, clock, 10000, "evt_r1") == "refunded"
    # The credit on account went first (newest), then 5 990 of F-1, which is open again.
    assert _state(db, settled) == (10000, "confirmed", [("F-1", 40000), ("F-2", 30000)],
                                   {"F-1": ("open", 5990), "F-2": ("paid", 0)})  # fmt: skip

    assert _refund(db, stripe_settings, clock, 10000, "evt_r1") == "duplicate"
    assert _refund(db, stripe_settings, clock, 10000, "evt_r1_again") == "refunded"  # same running total
    assert _state(db, settled)[0] == 10000

    assert _refund(db, stripe_settings, clock, 80000, "evt_r2") == "refunded"
    assert _state(db, settled) == (80000, "refunded", [], {"F-1": ("open", 45990), "F-2": ("open", 30000)})
    with db.session() as session:
        audited = session.scalars(select(AuditEvent).where(AuditEvent.action == "payment.refund")).all()
        assert [event.data["amount_minor"] for event in audited] == [10000, 70000]


def test_refund_events_that_are_not_ours_or_malformed(
    db: Database,
    settled: int,
    stripe_settings: Settings,  # noqa: F811
    clock: FixedClock,
) -> None:
    unknown = charge_refunded(80000, "evt_x", payment_intent="pi_someone_else")
    assert handle_stripe(unknown, sign(unknown), stripe_settings, db, clock).result == "ignored"
    not_a_number = json.loads(charge_refunded(80000, "evt_z"))
    not_a_number["data"]["object"]["amount_refunded"] = "x"
    for bad in (charge_refunded(80000, "evt_y", currency="usd"), json.dumps(not_a_number).encode()):
        with pytest.raises(BadPayload):
            handle_stripe(bad, sign(bad), stripe_settings, db, clock)
    assert _state(db, settled)[0] == 0


@pytest.fixture
def creditor(make_creditor: Callable[..., Creditor]) -> Creditor:
    return make_creditor()


EXAMPLES = itertools.count()
invoice_amounts = st.lists(st.integers(min_value=1, max_value=50_000), min_size=0, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    balances=invoice_amounts,
    amount=st.integers(min_value=1, max_value=120_000),
    refunds=st.lists(st.integers(min_value=0, max_value=130_000), min_size=1, max_size=5),
)
def test_allocations_always_sum_to_amount_minus_refunded(
    db: Database,
    make_debtor: Callable[..., Debtor],
    creditor: Creditor,
    clock: FixedClock,
    balances: list[int],
    amount: int,
    refunds: list[int],
) -> None:
    """Any invoices, any payment, any sequence of reported refund totals (in any order, out of range too)."""
    example = next(EXAMPLES)  # invoice numbers are unique per creditor, and every example adds a debtor
    debtor = make_debtor(
        creditor=creditor,
        external_ref=f"P-{example}",
        phone=None,
        email=None,
        invoices=[
            {"number": f"P{example}-{n}", "amount": str(value), "due_date": date(2026, 11, 1) + timedelta(days=n)}
            for n, value in enumerate(balances)
        ],
    )
    with db.session() as session:
        owner = session.get_one(Debtor, debtor.id)
        received = ReceivedPayment("test", f"ref-{debtor.id}", Money(amount, "CLP"), clock())
        payment = record_payment(session, owner, received, "test", clock()).payment
        for total in refunds:
            refund_payment(session, payment, total, "test", clock(), reason="refund")
            session.flush()
            invoices = list(session.scalars(select(Invoice).where(Invoice.debtor_id == debtor.id)))
            allocated = {a.invoice_id: a.amount_minor for a in payment.allocations}
            assert sum(a.amount_minor for a in payment.allocations) == payment.amount_minor - payment.refunded_minor
            assert 0 <= payment.refunded_minor <= payment.amount_minor
            for invoice in invoices:  # what the invoice lost is exactly what is still allocated to it
                assert invoice.amount_minor - invoice.balance_minor == allocated.get(invoice.id, 0)
                assert (invoice.status == "paid") == (invoice.balance_minor == 0)
        assert payment.refunded_minor == min(max(max(refunds), 0), amount)
        session.commit()
