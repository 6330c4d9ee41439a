"""Promises to pay after they are made: remind the day before, mark kept when the money arrives, mark broken
once the date has passed (in the debtor's time zone) and follow up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.audit import record
from bot.domain import Money
from bot.models import Debtor, Payment, PromiseToPay, ScheduledReminder
from bot.outreach import queue_bot_message

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PromiseRun:
    reminded: int = 0
    kept: int = 0
    broken: int = 0


def local_today(debtor: Debtor, now: datetime) -> date:
    return now.astimezone(ZoneInfo(debtor.timezone)).date()


def paid_since_promise(session: Session, promise: PromiseToPay) -> int:
    """What the debtor paid (less refunds), in the promise's currency, since the promise was made."""
    total = session.scalar(
        select(func.coalesce(func.sum(Payment.amount_minor - Payment.refunded_minor), 0)).where(
            Payment.debtor_id == promise.debtor_id,
            Payment.currency == promise.currency,
            Payment.status == "confirmed",
            Payment.received_at >= promise.created_at,
        )
    )
    return int(total or 0)


def resolve_promises(session: Session, now: datetime, debtor_id: int | None = None) -> PromiseRun:
    """Mark pending promises kept (paid enough) or broken (date passed); follow up on broken ones."""
    query = select(PromiseToPay).where(PromiseToPay.status == "pending").order_by(PromiseToPay.id)
    if debtor_id is not None:
        query = query.where(PromiseToPay.debtor_id == debtor_id)
    kept = broken = 0
    for promise in session.scalars(query).all():
        debtor = session.get(Debtor, promise.debtor_id)
        if debtor is None:
            continue
        if paid_since_promise(session, promise) >= promise.amount_minor:
            _resolve(session, promise, "kept", now)
            kept += 1
        elif local_today(debtor, now) > promise.promised_date:
            _resolve(session, promise, "broken", now)
            queue_bot_message(session, debtor, "promise_broken_followup", _variables(debtor, promise), now)
            broken += 1
    return PromiseRun(kept=kept, broken=broken)


def keep_paid_promises(session: Session, now: datetime, debtor_id: int) -> int:
    """Called as a payment is recorded: the debtor's pending promises that are now paid are kept."""
    kept = 0
    pending = select(PromiseToPay).where(PromiseToPay.status == "pending", PromiseToPay.debtor_id == debtor_id)
    for promise in session.scalars(pending.order_by(PromiseToPay.id)).all():
        if paid_since_promise(session, promise) >= promise.amount_minor:
            _resolve(session, promise, "kept", now)
            kept += 1
    return kept


def remind_promises(session: Session, now: datetime) -> PromiseRun:
    """Queue one reminder per pending promise on the day before its date (debtor's local calendar)."""
    reminded = 0
    pending = select(PromiseToPay).where(PromiseToPay.status == "pending", PromiseToPay.invoice_id.is_not(None))
    for promise in session.scalars(pending).all():
        debtor = session.get(Debtor, promise.debtor_id)
        if debtor is None or local_today(debtor, now) != promise.promised_date - timedelta(days=1):
            continue
        if _claim_reminder(session, promise, now):
            queued = queue_bot_message(session, debtor, "promise_reminder", _variables(debtor, promise), now)
            reminded += queued.message_id is not None
    return PromiseRun(reminded=reminded)


def _claim_reminder(session: Session, promise: PromiseToPay, now: datetime) -> bool:
    """Insert the (invoice, step) row that makes this reminder happen once, even with two schedulers."""
    row = ScheduledReminder(
        invoice_id=promise.invoice_id,
        debtor_id=promise.debtor_id,
        step_key=f"promise:{promise.id}:eve",
        due_at=now,
        status="sent",
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def _resolve(session: Session, promise: PromiseToPay, status: str, now: datetime) -> None:
    promise.status = status
    promise.resolved_at = now
    record(session, "system", f"promise.{status}", promise, amount_minor=promise.amount_minor)


def _variables(debtor: Debtor, promise: PromiseToPay) -> dict[str, object]:
    return {
        "debtor_name": debtor.name.split()[0] if debtor.name else "",
        "amount": Money(promise.amount_minor, promise.currency),
        "promised_date": promise.promised_date,
    }
