"""What follows a newly recorded payment, whatever its source: reminders of settled invoices are cancelled and
the debtor is sent a receipt. Public so bank reconciliation and provider webhooks share one definition."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain import Money
from bot.models import Debtor, Invoice, Payment, ScheduledReminder
from bot.outreach import queue_bot_message
from bot.portal import PortalTokens

logger = logging.getLogger(__name__)


def cancel_reminders_of_paid_invoices(session: Session, payment: Payment) -> int:
    """Cancel the planned reminders of every invoice this payment settled; returns how many."""
    touched = [allocation.invoice_id for allocation in payment.allocations if allocation.invoice_id is not None]
    if not touched:
        return 0
    paid_ids = list(session.scalars(select(Invoice.id).where(Invoice.id.in_(touched), Invoice.status == "paid")))
    if not paid_ids:
        return 0
    result = session.execute(
        update(ScheduledReminder)
        .where(ScheduledReminder.invoice_id.in_(paid_ids), ScheduledReminder.status == "planned")
        .values(status="cancelled", reason="invoice paid")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def queue_receipt(session: Session, debtor: Debtor, payment: Payment, settings: Settings, now: datetime) -> None:
    """Queue the debtor's 'payment received' message with a link to the receipt in the portal."""
    tokens = PortalTokens(settings.secret_key, settings.public_url)
    token, _ = tokens.issue(debtor.id, timedelta(days=settings.portal_link_days), now=now)
    variables = {
        "amount": Money(payment.amount_minor, payment.currency),
        "creditor_name": debtor.creditor.name,
        "receipt_link": f"{tokens.url(token)}/receipts/{payment.id}",
    }
    queued = queue_bot_message(session, debtor, "payment_received", variables, now)
    logger.info("payment %s receipt message: %s", payment.id, queued.reason)
