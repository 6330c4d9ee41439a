"""Payment links: one link pays exactly its amount for one invoice, installment or settlement.

A link is signed and expiring through the portal token mechanism, has a short SMS-friendly code, and is
fulfilled by a provider behind `PaymentProvider`: the portal's own pay page, or a hosted checkout (Stripe)
the debtor is redirected to, so card data never touches Cobrabot.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import audit
from bot.domain import Money
from bot.models import Debtor, Installment, Invoice, PaymentLink, PaymentPlan
from bot.portal import PortalTokens
from bot.templates import TemplateRenderer

PURPOSES = ("invoice", "installment", "settlement")
DEFAULT_LIFETIME = timedelta(days=7)


class PaymentProvider(Protocol):
    """Turns a stored link into the URL the debtor pays at, plus the provider's id for it (if any)."""

    name: str

    def create_checkout(
        self, link: PaymentLink, debtor: Debtor, success_url: str, cancel_url: str, description: str
    ) -> tuple[str, str | None]: ...


class PortalProvider:
    """No external redirect: the short link leads to the debtor's portal, which shows how to pay."""

    name = "portal"

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")

    def create_checkout(
        self, link: PaymentLink, debtor: Debtor, success_url: str, cancel_url: str, description: str
    ) -> tuple[str, str | None]:
        return f"{self.public_url}/l/{link.short_code}", None


class LinkError(ValueError):
    """The link cannot be created as asked (wrong purpose, amount, invoice or installment)."""


class LinkUnusable(Exception):
    """The link can no longer be paid; `reason` is its effective status (expired, paid, cancelled)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"payment link is {reason}")
        self.reason = reason


def effective_status(link: PaymentLink, now: datetime) -> str:
    """The stored status, except that an active link past its expiry reads as expired."""
    if link.status == "active" and link.expires_at <= now:
        return "expired"
    return link.status


def ensure_payable(link: PaymentLink, now: datetime) -> None:
    status = effective_status(link, now)
    if status != "active":
        raise LinkUnusable(status)


def create_link(
    session: Session,
    tokens: PortalTokens,
    debtor: Debtor,
    amount: Money,
    purpose: str,
    *,
    now: datetime,
    invoice_id: int | None = None,
    installment_id: int | None = None,
    provider: PaymentProvider | None = None,
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> PaymentLink:
    """Store a link for `debtor` and let the provider (portal by default) give it its payable URL."""
    provider = provider or PortalProvider(tokens.public_url)
    invoice = _check_target(session, debtor, amount, purpose, invoice_id, installment_id)
    token, expires_at = tokens.issue(debtor.id, lifetime, now=now)  # unique: every token carries a nonce
    link = PaymentLink(
        debtor_id=debtor.id,
        token=token,
        short_code=secrets.token_urlsafe(6),
        provider=provider.name,
        purpose=purpose,
        invoice_id=invoice_id,
        installment_id=installment_id,
        amount_minor=amount.minor,
        currency=amount.currency,
        expires_at=expires_at,
        created_at=now,
    )
    session.add(link)
    session.flush()  # the provider needs the link's id for its metadata
    description = TemplateRenderer.from_session(session).render(
        "payment_item_name",
        debtor.locale,
        "*",
        {"creditor_name": debtor.creditor.name, "invoice_number": invoice.number if invoice else None},
    )
    portal_page = tokens.url(token)
    link.url, link.provider_ref = provider.create_checkout(
        link, debtor, f"{portal_page}?paid={link.id}", portal_page, description
    )
    audit.record(
        session, "system", "payment_link.created", link, provider=link.provider, amount_minor=amount.minor
    ).occurred_at = now
    return link


def _check_target(
    session: Session, debtor: Debtor, amount: Money, purpose: str, invoice_id: int | None, installment_id: int | None
) -> Invoice | None:
    """Single purpose: an invoice link names only the debtor's invoice, an installment link only its installment."""
    if purpose not in PURPOSES:
        raise LinkError(f"purpose must be one of {', '.join(PURPOSES)}")
    if amount.minor <= 0:
        raise LinkError("a payment link's amount must be positive")
    if purpose == "invoice":
        if invoice_id is None or installment_id is not None:
            raise LinkError("an invoice link names exactly one invoice")
        invoice = session.get(Invoice, invoice_id)
        if invoice is None or invoice.debtor_id != debtor.id:
            raise LinkError("no such invoice for this debtor")
        if invoice.currency != amount.currency:
            raise LinkError(f"the invoice is in {invoice.currency}, the link in {amount.currency}")
        if amount.minor > invoice.balance_minor:
            raise LinkError("the amount is more than the invoice's balance")
        return invoice
    if purpose == "installment":
        if installment_id is None or invoice_id is not None:
            raise LinkError("an installment link names exactly one installment")
        owner = session.scalar(
            select(PaymentPlan.debtor_id)
            .join(Installment, Installment.plan_id == PaymentPlan.id)
            .where(Installment.id == installment_id)
        )
        if owner != debtor.id:
            raise LinkError("no such installment for this debtor")
        return None
    if invoice_id is not None or installment_id is not None:
        raise LinkError("a settlement link covers the whole account, not one invoice or installment")
    return None


def reusable_link(
    session: Session, debtor_id: int, invoice_id: int, provider: str, amount: Money, now: datetime
) -> PaymentLink | None:
    """An active, unexpired link of this provider for exactly this invoice and amount: clicking Pay twice
    should not open two checkouts the debtor could both pay."""
    return session.scalars(
        select(PaymentLink)
        .where(
            PaymentLink.debtor_id == debtor_id,
            PaymentLink.invoice_id == invoice_id,
            PaymentLink.provider == provider,
            PaymentLink.amount_minor == amount.minor,
            PaymentLink.currency == amount.currency,
            PaymentLink.status == "active",
            PaymentLink.expires_at > now,
        )
        .order_by(PaymentLink.id.desc())
        .limit(1)
    ).first()


def mark_paid(session: Session, link: PaymentLink, payment_id: int, now: datetime) -> None:
    link.status = "paid"
    audit.record(session, "system", "payment_link.paid", link, payment_id=payment_id).occurred_at = now
