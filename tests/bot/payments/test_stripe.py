"""Stripe: the real SDK against the stand-in for Checkout, and signed webhooks recorded exactly once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.config import Settings, load_settings
from bot.domain import BadPayload, InvalidSignature, Money
from bot.models import (
    AuditEvent,
    Debtor,
    Invoice,
    Message,
    Outbox,
    Payment,
    PaymentAllocation,
    PaymentLink,
    ProcessedEvent,
    PromiseToPay,
    ScheduledReminder,
)
from bot.payments.links import CheckoutFailed, open_checkout
from bot.payments.stripe_provider import StripeProvider, UnsupportedAmount, from_stripe_amount, to_stripe_amount
from bot.payments.webhook import handle_stripe
from bot.portal import PortalTokens
from bot.store import Database
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET, FixedClock
from tests.standin import StandIn

WEBHOOK_SECRET = "whsec_test_cobrabot"
TOKENS = PortalTokens(TEST_SECRET, TEST_PUBLIC_URL)


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """Stripe's scheme: t=<unix>,v1=HMAC-SHA256(secret, "<t>.<body>")."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def checkout_completed(link: PaymentLink, event_id: str = "evt_1", **overrides: Any) -> bytes:
    session = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "payment_status": "paid",
        "payment_intent": "pi_test_1",
        "amount_total": link.amount_minor,
        "currency": link.currency.lower(),
        "client_reference_id": str(link.id),
        "metadata": {"payment_link_id": str(link.id), "debtor_id": str(link.debtor_id)},
    } | overrides
    event = {"id": event_id, "object": "event", "type": "checkout.session.completed", "data": {"object": session}}
    return json.dumps(event).encode()


def session_json(session_id: str = "cs_test_1") -> dict[str, Any]:
    return {"id": session_id, "object": "checkout.session", "url": f"https://checkout.stripe.test/c/pay/{session_id}"}


@pytest.fixture
def stripe_settings(database_url: str, standin: StandIn) -> Settings:
    return load_settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        public_url=TEST_PUBLIC_URL,
        stripe_api_key="sk_test_cobrabot",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_url=standin.url,
    )


@pytest.mark.parametrize(
    ("money", "unit_amount"),
    [
        (Money(45990, "CLP"), 45990),  # zero-decimal on both sides: whole pesos
        (Money(1200, "JPY"), 1200),
        (Money(12050, "USD"), 12050),  # cents
        (Money(5000, "ISK"), 500000),  # Babel has no decimals, Stripe counts hundredths
        (Money(12345, "KWD"), 12345),
    ],
)
def test_amounts_in_stripe_units(money: Money, unit_amount: int) -> None:
    assert to_stripe_amount(money) == unit_amount
    assert from_stripe_amount(unit_amount, money.currency.lower()) == money


def test_stripe_amounts_that_would_need_rounding_are_refused() -> None:
    with pytest.raises(UnsupportedAmount):
        from_stripe_amount(500050, "isk")


def _link_via_stripe(
    db: Database, debtor: Debtor, settings: Settings, clock: FixedClock, money: Money, number: str = "F-1"
) -> PaymentLink:
    provider = StripeProvider.from_settings(settings)
    assert provider is not None
    with db.session() as session:
        invoice_id = session.scalars(select(Invoice.id).where(Invoice.number == number)).one()
    return open_checkout(db, TOKENS, debtor.id, money, "invoice", invoice_id=invoice_id, provider=provider, now=clock())


@pytest.mark.parametrize(("currency", "amount", "unit_amount"), [("CLP", "45990", "45990"), ("USD", "120.50", "12050")])
def test_checkout_session_through_the_real_sdk(
    db: Database,
    make_creditor: Callable[..., Any],
    make_debtor: Callable[..., Debtor],
    stripe_settings: Settings,
    standin: StandIn,
    clock: FixedClock,
    currency: str,
    amount: str,
    unit_amount: str,
) -> None:
    creditor = make_creditor(currency=currency)
    debtor = make_debtor(
        creditor=creditor, locale="en-US", invoices=[{"number": "F-1", "amount": amount, "due_date": date(2026, 12, 5)}]
    )
    standin.respond("POST", "/v1/checkout/sessions", 200, session_json())
    money = Money.from_amount(amount, currency)
    link = _link_via_stripe(db, debtor, stripe_settings, clock, money)

    assert (link.provider, link.url, link.provider_ref) == ("stripe", session_json()["url"], "cs_test_1")
    request = standin.requests[-1]
    form = request.form
    assert request.headers["Authorization"] == "Bearer sk_test_cobrabot"
    assert request.headers["Idempotency-Key"].startswith(f"cobrabot-payment-link-{link.id}-")
    assert form["mode"] == ["payment"]
    assert form["line_items[0][price_data][currency]"] == [currency.lower()]
    assert form["line_items[0][price_data][unit_amount]"] == [unit_amount]
    assert form["line_items[0][price_data][product_data][name]"] == ["Payment to Aguas del Valle · invoice F-1"]
    assert form["metadata[payment_link_id]"] == [str(link.id)]
    assert form["metadata[debtor_id]"] == [str(debtor.id)]
    assert form["client_reference_id"] == [str(link.id)]
    assert form["locale"] == ["en"]
    assert form["success_url"] == [f"{TEST_PUBLIC_URL}/p/{link.token}?paid={link.id}"]
    assert form["cancel_url"] == [f"{TEST_PUBLIC_URL}/p/{link.token}"]
    assert not any(key.startswith(("card", "payment_method_data")) for key in form)


def test_a_failed_checkout_creation_leaves_a_failed_link_that_cannot_be_paid(
    db: Database, make_debtor: Callable[..., Debtor], stripe_settings: Settings, standin: StandIn, clock: FixedClock
) -> None:
    debtor = make_debtor()
    standin.respond("POST", "/v1/checkout/sessions", 400, {"error": {"type": "invalid_request_error", "message": "x"}})
    with pytest.raises(CheckoutFailed, match=r"stripe could not open a checkout: .*x"):
        _link_via_stripe(db, debtor, stripe_settings, clock, Money(45990, "CLP"))
    with db.session() as session:
        link = session.scalars(select(PaymentLink)).one()
        assert (link.status, link.url, link.provider_ref) == ("failed", None, None)
        audited = session.scalars(select(AuditEvent).where(AuditEvent.action == "payment_link.failed")).one()
        assert audited.subject_id == str(link.id) and "x" in audited.data["error"]


@pytest.fixture
def paid_setup(
    db: Database, make_debtor: Callable[..., Debtor], stripe_settings: Settings, standin: StandIn, clock: FixedClock
) -> tuple[Debtor, PaymentLink]:
    """A debtor with two invoices, a promise, planned reminders and a Stripe link for F-1's whole balance."""
    debtor = make_debtor(
        invoices=[
            {"number": "F-1", "amount": "45990", "due_date": date(2026, 12, 5)},
            {"number": "F-2", "amount": "30000", "due_date": date(2026, 11, 1)},
        ]
    )
    standin.respond("POST", "/v1/checkout/sessions", 200, session_json())
    link = _link_via_stripe(db, debtor, stripe_settings, clock, Money(45990, "CLP"))
    with db.session() as session:
        ids = dict(session.execute(select(Invoice.number, Invoice.id)).tuples().all())
        session.add(
            PromiseToPay(
                debtor_id=debtor.id,
                invoice_id=ids["F-1"],
                amount_minor=45990,
                currency="CLP",
                promised_date=date(2026, 12, 1),
                created_at=clock(),
            )
        )
        for number in ("F-1", "F-2"):
            session.add(
                ScheduledReminder(invoice_id=ids[number], debtor_id=debtor.id, step_key="due+3", due_at=clock())
            )
        session.commit()
    return debtor, link


def _counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Payment, PaymentAllocation, ProcessedEvent, Message, Outbox)
        }


def test_a_paid_checkout_is_recorded_allocated_confirmed_and_stops_reminders(
    db: Database, paid_setup: tuple[Debtor, PaymentLink], stripe_settings: Settings, clock: FixedClock
) -> None:
    debtor, link = paid_setup
    payload = checkout_completed(link)

    outcome = handle_stripe(payload, sign(payload), stripe_settings, db, clock)

    assert outcome.result == "recorded"
    with db.session() as session:
        payment = session.get(Payment, outcome.payment_id)
        assert (payment.provider, payment.provider_payment_id, payment.amount_minor) == ("stripe", "pi_test_1", 45990)
        assert payment.raw["event_id"] == "evt_1"
        invoices = {row.number: row for row in session.scalars(select(Invoice))}
        # The link's invoice is paid first even though F-2 is older.
        assert [(a.invoice_id, a.amount_minor) for a in payment.allocations] == [(invoices["F-1"].id, 45990)]
        assert (invoices["F-1"].status, invoices["F-1"].balance_minor) == ("paid", 0)
        assert invoices["F-2"].balance_minor == 30000
        assert session.get(PaymentLink, link.id).status == "paid"
        assert session.scalars(select(PromiseToPay.status)).one() == "kept"
        reminders = dict(session.execute(select(ScheduledReminder.invoice_id, ScheduledReminder.status)).tuples().all())
        assert reminders == {invoices["F-1"].id: "cancelled", invoices["F-2"].id: "planned"}
        message = session.scalars(select(Message).where(Message.template_key == "payment_received")).one()
        assert message.debtor_id == debtor.id and message.delivery_status == "queued"
        assert "$45.990" in message.body and f"/receipts/{payment.id}" in message.body
        assert session.scalars(select(Outbox.initiated_by).where(Outbox.message_id == message.id)).one() == "bot"


def test_a_replayed_event_changes_nothing(
    db: Database, paid_setup: tuple[Debtor, PaymentLink], stripe_settings: Settings, clock: FixedClock
) -> None:
    _, link = paid_setup
    payload = checkout_completed(link)
    handle_stripe(payload, sign(payload), stripe_settings, db, clock)
    before = _counts(db)

    assert handle_stripe(payload, sign(payload), stripe_settings, db, clock).result == "duplicate"
    assert _counts(db) == before
    # A second event about the same payment (Stripe's async success) must not pay twice either.
    again = checkout_completed(link, event_id="evt_2")
    assert handle_stripe(again, sign(again), stripe_settings, db, clock).result == "recorded"
    after = _counts(db)
    assert (after["Payment"], after["Message"]) == (before["Payment"], before["Message"])


@pytest.mark.parametrize(
    "header",
    [
        "t=1700000000,v1=deadbeef",
        "",
        "garbage",
    ],
)
def test_forged_events_are_rejected_and_nothing_is_written(
    db: Database, paid_setup: tuple[Debtor, PaymentLink], stripe_settings: Settings, clock: FixedClock, header: str
) -> None:
    _, link = paid_setup
    payload = checkout_completed(link)
    before = _counts(db)
    with pytest.raises(InvalidSignature):
        handle_stripe(payload, header, stripe_settings, db, clock)
    with pytest.raises(InvalidSignature):
        handle_stripe(payload, sign(payload, secret="whsec_someone_else"), stripe_settings, db, clock)
    with pytest.raises(InvalidSignature):  # a genuine but stale signature: replayed from long ago
        handle_stripe(payload, sign(payload, timestamp=int(time.time()) - 3600), stripe_settings, db, clock)
    assert _counts(db) == before


def test_signed_but_malformed_events_are_bad_payloads(
    db: Database, stripe_settings: Settings, clock: FixedClock
) -> None:
    for payload in (b"{not json", b'{"object": "event"}'):
        with pytest.raises(BadPayload):
            handle_stripe(payload, sign(payload), stripe_settings, db, clock)


@pytest.mark.parametrize(
    ("event_type", "overrides"),
    [
        ("payment_intent.created", {}),
        ("checkout.session.completed", {"payment_status": "unpaid"}),
        ("checkout.session.completed", {"metadata": {}, "client_reference_id": None}),
        ("checkout.session.completed", {"metadata": {"payment_link_id": "999999"}}),
    ],
)
def test_unrelated_or_unpaid_events_are_acknowledged_and_ignored(
    db: Database,
    paid_setup: tuple[Debtor, PaymentLink],
    stripe_settings: Settings,
    clock: FixedClock,
    event_type: str,
    overrides: dict[str, Any],
) -> None:
    _, link = paid_setup
    event = json.loads(checkout_completed(link, **overrides))
    event["type"] = event_type
    payload = json.dumps(event).encode()
    assert handle_stripe(payload, sign(payload), stripe_settings, db, clock).result == "ignored"
    counts = _counts(db)
    assert (counts["Payment"], counts["ProcessedEvent"]) == (0, 1)
