"""Payment links: one link pays exactly its amount for one invoice, installment or settlement.

A link is signed and expiring through the portal token mechanism, has a short SMS-friendly code, and is
fulfilled by a provider behind `PaymentProvider`: the portal's own pay page, or a hosted checkout (Stripe,
Mercado Pago) the debtor is redirected to, so card data never touches Cobrabot.

A hosted checkout is an HTTP call to the provider, so `open_checkout` keeps it outside every transaction: the
link is stored and committed as `pending`, the provider is called, and a second short transaction makes the
link `active` with its URL (or `failed`). On SQLite a transaction holds the database's write lock, and a slow
provider must not stall every other writer.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot import audit
from bot.domain import Money
from bot.models import Debtor, Installment, Invoice, PaymentLink, PaymentPlan
from bot.portal import PortalTokens
from bot.store import Database
from bot.templates import TemplateRenderer

logger = logging.getLogger(__name__)
PURPOSES = ("invoice", "installment", "settlement")
DEFAULT_LIFETIME = timedelta(days=7)
# Statuses a link can still become paid from; `pending` is a link whose hosted checkout is being created.
OPEN_STATUSES = ("active", "pending")


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """Everything a provider needs to open a checkout for a stored link: plain values, no ORM rows, because
    the provider is called after the transaction that stored the link has ended."""

    link_id: int
    token: str
    short_code: str
    debtor_id: int
    locale: str
    amount: Money
    description: str
    success_url: str
    cancel_url: str
    expires_at: datetime


class PaymentProvider(Protocol):
    """Turns a stored link into the URL the debtor pays at, plus the provider's id for it (if any)."""

    name: str

    def create_checkout(self, request: CheckoutRequest) -> tuple[str, str | None]: ...


class PortalProvider:
    """No external redirect: the short link leads to the debtor's portal, which shows how to pay."""

    name = "portal"

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")

    def create_checkout(self, request: CheckoutRequest) -> tuple[str, str | None]:
        return f"{self.public_url}/l/{request.short_code}", None


class CheckoutFailed(Exception):
    """The provider could not open a checkout; the link was kept as `failed` with this message audited."""


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
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> PaymentLink:
    """Store a portal link for `debtor` inside the caller's transaction (no I/O: the URL is our own)."""
    link, request = _store_link(
        session, tokens, debtor, amount, purpose, "portal", now, invoice_id, installment_id, lifetime, "active"
    )
    link.url, link.provider_ref = PortalProvider(tokens.public_url).create_checkout(request)
    return link


def open_checkout(
    database: Database,
    tokens: PortalTokens,
    debtor_id: int,
    amount: Money,
    purpose: str,
    *,
    provider: PaymentProvider,
    now: datetime,
    invoice_id: int | None = None,
    installment_id: int | None = None,
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> PaymentLink:
    """Store a link, commit, call the provider with no transaction open, then record its URL in a second one.

    Raises LinkError before anything is stored, CheckoutFailed (link kept as `failed`) when the provider fails.
    """
    with database.session() as session:
        debtor = session.get(Debtor, debtor_id)
        if debtor is None:
            raise LinkError("no such debtor")
        link, request = _store_link(
            session, tokens, debtor, amount, purpose, provider.name, now, invoice_id, installment_id, lifetime
        )
        session.commit()
    try:
        url, provider_ref = provider.create_checkout(request)
    except Exception as exc:
        _mark_failed(database, request.link_id, provider.name, exc, now)
        raise CheckoutFailed(f"{provider.name} could not open a checkout: {exc}") from exc
    with database.session() as session:
        link = session.get_one(PaymentLink, request.link_id)
        link.url, link.provider_ref = url, provider_ref
        if link.status == "pending":  # a webhook or the expiry job may have moved it on meanwhile
            link.status = "active"
        session.commit()
    return link


def _mark_failed(database: Database, link_id: int, provider: str, error: Exception, now: datetime) -> None:
    logger.warning("%s checkout for payment link %s failed: %s", provider, link_id, error)
    with database.session() as session:
        link = session.get_one(PaymentLink, link_id)
        link.status = "failed"
        failed = audit.record(session, "system", "payment_link.failed", link, provider=provider, error=str(error)[:500])
        failed.occurred_at = now
        session.commit()


def _store_link(
    session: Session,
    tokens: PortalTokens,
    debtor: Debtor,
    amount: Money,
    purpose: str,
    provider: str,
    now: datetime,
    invoice_id: int | None,
    installment_id: int | None,
    lifetime: timedelta,
    status: str = "pending",
) -> tuple[PaymentLink, CheckoutRequest]:
    invoice = _check_target(session, debtor, amount, purpose, invoice_id, installment_id)
    token, expires_at = tokens.issue(debtor.id, lifetime, now=now)  # unique: every token carries a nonce
    link = PaymentLink(
        debtor_id=debtor.id,
        token=token,
        short_code=secrets.token_urlsafe(6),
        provider=provider,
        purpose=purpose,
        invoice_id=invoice_id,
        installment_id=installment_id,
        amount_minor=amount.minor,
        currency=amount.currency,
        status=status,
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
    audit.record(
        session, "system", "payment_link.created", link, provider=provider, amount_minor=amount.minor
    ).occurred_at = now
    portal_page = tokens.url(token)
    request = CheckoutRequest(
        link_id=link.id,
        token=token,
        short_code=link.short_code,
        debtor_id=debtor.id,
        locale=debtor.locale,
        amount=amount,
        description=description,
        success_url=f"{portal_page}?paid={link.id}",
        cancel_url=portal_page,
        expires_at=expires_at,
    )
    return link, request


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


def mark_expired(session: Session, link: PaymentLink, now: datetime, reason: str) -> None:
    """A provider said the checkout is over (e.g. Stripe's `checkout.session.expired`)."""
    if link.status in OPEN_STATUSES:
        link.status = "expired"
        audit.record(session, "system", "payment_link.expired", link, reason=reason).occurred_at = now


def expire_links(session: Session, now: datetime) -> int:
    """Mark every open link past its expiry as expired, in one set-based UPDATE; how many changed."""
    result = session.execute(
        update(PaymentLink)
        .where(PaymentLink.status.in_(OPEN_STATUSES), PaymentLink.expires_at <= now)
        .values(status="expired")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
