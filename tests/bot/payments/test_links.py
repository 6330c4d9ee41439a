"""Payment links: single purpose, signed and expiring through the portal token, paid by a provider."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from bot.domain import Money
from bot.models import AuditEvent, Debtor, Installment, Invoice, PaymentPlan
from bot.payments.links import (
    CheckoutRequest,
    LinkError,
    LinkUnusable,
    PortalProvider,
    create_link,
    effective_status,
    ensure_payable,
    mark_paid,
    reusable_link,
)
from bot.portal import PortalTokens
from bot.store import Database
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET, FixedClock

TOKENS = PortalTokens(TEST_SECRET, TEST_PUBLIC_URL)


def _invoice(db: Database, debtor: Debtor, number: str = "F-1") -> Invoice:
    with db.session() as session:
        return session.scalars(select(Invoice).where(Invoice.debtor_id == debtor.id, Invoice.number == number)).one()


def test_portal_link_is_short_signed_expiring_and_audited(
    db: Database, make_debtor: Callable[..., Debtor], clock: FixedClock
) -> None:
    debtor = make_debtor()
    invoice = _invoice(db, debtor)
    with db.session() as session:
        debtor = session.get(Debtor, debtor.id)
        link = create_link(session, TOKENS, debtor, Money(45990, "CLP"), "invoice", invoice_id=invoice.id, now=clock())
        session.commit()
        assert link.provider == "portal" and link.provider_ref is None
        assert link.url == f"{TEST_PUBLIC_URL}/l/{link.short_code}"
        assert link.expires_at == clock() + timedelta(days=7)
        assert TOKENS.verify(link.token, now=clock()) == debtor.id
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "payment_link.created")).one()
        assert audit.subject_id == str(link.id) and audit.data["amount_minor"] == 45990


def test_the_short_link_leads_to_the_portal_until_the_link_expires(
    db: Database, make_debtor: Callable[..., Debtor], clock: FixedClock, client
) -> None:
    debtor = make_debtor()
    invoice = _invoice(db, debtor)
    with db.session() as session:
        link = create_link(
            session,
            TOKENS,
            session.get(Debtor, debtor.id),
            Money(1000, "CLP"),
            "invoice",
            invoice_id=invoice.id,
            now=clock(),
            lifetime=timedelta(hours=1),
        )
        session.commit()
    response = client.get(f"/l/{link.short_code}")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/p/{link.token}")
    clock.advance(hours=2)
    assert client.get(f"/l/{link.short_code}").status_code == 410


def test_expiry_and_status_rules(db: Database, make_debtor: Callable[..., Debtor], clock: FixedClock) -> None:
    debtor = make_debtor()
    invoice = _invoice(db, debtor)
    with db.session() as session:
        link = create_link(
            session,
            TOKENS,
            session.get(Debtor, debtor.id),
            Money(100, "CLP"),
            "invoice",
            invoice_id=invoice.id,
            now=clock(),
            lifetime=timedelta(days=1),
        )
        ensure_payable(link, clock())
        assert effective_status(link, clock() + timedelta(days=1)) == "expired"
        with pytest.raises(LinkUnusable) as expired:
            ensure_payable(link, clock() + timedelta(days=2))
        assert expired.value.reason == "expired"
        mark_paid(session, link, payment_id=1, now=clock())
        assert effective_status(link, clock() + timedelta(days=5)) == "paid"
        with pytest.raises(LinkUnusable, match="paid"):
            ensure_payable(link, clock())


@pytest.mark.parametrize(
    ("amount", "purpose", "target", "message"),
    [
        (Money(100, "CLP"), "donation", "invoice", "purpose must be one of"),
        (Money(0, "CLP"), "invoice", "invoice", "positive"),
        (Money(45991, "CLP"), "invoice", "invoice", "more than the invoice's balance"),
        (Money(100, "USD"), "invoice", "invoice", "the invoice is in CLP"),
        (Money(100, "CLP"), "invoice", None, "exactly one invoice"),
        (Money(100, "CLP"), "installment", "invoice", "exactly one installment"),
        (Money(100, "CLP"), "settlement", "invoice", "whole account"),
        (Money(100, "CLP"), "invoice", "other", "no such invoice"),
    ],
)
def test_a_link_is_single_purpose(
    db: Database,
    make_debtor: Callable[..., Debtor],
    clock: FixedClock,
    amount: Money,
    purpose: str,
    target: str | None,
    message: str,
) -> None:
    debtor = make_debtor()
    other = make_debtor(
        creditor=debtor.creditor,
        external_ref="C-2",
        invoices=[{"number": "F-9", "amount": "500", "due_date": date(2026, 12, 5)}],
    )
    invoice_id = {"invoice": _invoice(db, debtor).id, "other": _invoice(db, other, "F-9").id, None: None}[target]
    with db.session() as session, pytest.raises(LinkError, match=message):
        create_link(
            session, TOKENS, session.get(Debtor, debtor.id), amount, purpose, invoice_id=invoice_id, now=clock()
        )


def test_installment_and_settlement_links(db: Database, make_debtor: Callable[..., Debtor], clock: FixedClock) -> None:
    debtor = make_debtor()
    stranger = make_debtor(creditor=debtor.creditor, external_ref="C-2", invoices=[])
    with db.session() as session:
        plan = PaymentPlan(debtor_id=debtor.id, currency="CLP", total_minor=40000, installment_count=1, status="active")
        plan.installments = [Installment(seq=1, due_date=date(2026, 12, 20), amount_minor=40000)]
        session.add(plan)
        session.flush()
        installment_id = plan.installments[0].id
        owner = session.get(Debtor, debtor.id)
        link = create_link(
            session, TOKENS, owner, Money(40000, "CLP"), "installment", installment_id=installment_id, now=clock()
        )
        assert (link.purpose, link.installment_id, link.invoice_id) == ("installment", installment_id, None)
        whole = create_link(session, TOKENS, owner, Money(45990, "CLP"), "settlement", now=clock())
        assert whole.invoice_id is None and whole.installment_id is None
        with pytest.raises(LinkError, match="no such installment"):
            create_link(
                session,
                TOKENS,
                session.get(Debtor, stranger.id),
                Money(40000, "CLP"),
                "installment",
                installment_id=installment_id,
                now=clock(),
            )


def test_an_active_link_for_the_same_invoice_and_amount_is_reused(
    db: Database, make_debtor: Callable[..., Debtor], clock: FixedClock
) -> None:
    debtor = make_debtor()
    invoice = _invoice(db, debtor)
    amount = Money(45990, "CLP")
    with db.session() as session:
        link = create_link(
            session, TOKENS, session.get(Debtor, debtor.id), amount, "invoice", invoice_id=invoice.id, now=clock()
        )
        session.commit()
        assert reusable_link(session, debtor.id, invoice.id, "portal", amount, clock()) == link
        assert reusable_link(session, debtor.id, invoice.id, "portal", Money(100, "CLP"), clock()) is None
        assert reusable_link(session, debtor.id, invoice.id, "stripe", amount, clock()) is None
        assert reusable_link(session, debtor.id, invoice.id, "portal", amount, clock() + timedelta(days=8)) is None
        link.status = "cancelled"
        assert reusable_link(session, debtor.id, invoice.id, "portal", amount, clock()) is None


def test_portal_provider_points_at_the_short_link(clock: FixedClock) -> None:
    request = CheckoutRequest(
        link_id=1,
        token="t",
        short_code="abc123",
        debtor_id=1,
        locale="es",
        amount=Money(1, "CLP"),
        description="d",
        success_url="s",
        cancel_url="c",
        expires_at=clock(),
    )
    provider = PortalProvider(TEST_PUBLIC_URL + "/")
    assert provider.create_checkout(request) == (f"{TEST_PUBLIC_URL}/l/abc123", None)
