"""What an agent does with a statement line the rules could not settle: confirm the suggested debtor, assign the
line to another debtor, or ignore it (not a customer payment). Each action locks the line, is audited, and
records the payment at most once (its provider id is the line's fingerprint)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as clock_time
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import audit
from bot.config import Settings
from bot.models import Creditor, Debtor, ImportBatch, Invoice, StatementLine
from bot.payments.reconcile import QUEUE_STATUSES, ReconcileError, Target, pay_line, provider_of


@dataclass(frozen=True, slots=True)
class Resolver:
    """Who acts (an agent id and their audit actor name), when, and the settings receipts need (None: no receipt)."""

    agent_id: int | None
    actor: str
    now: datetime
    settings: Settings | None = None


def confirm_line(session: Session, line_id: int, by: Resolver) -> StatementLine:
    """Accept the suggestion: the suggested debtor's payment is recorded and the line is confirmed."""
    line = _open_line(session, line_id, allowed=("suggested",))
    if line.debtor_id is None:
        raise ReconcileError("this line has no suggested debtor; assign it to one")
    return _pay(session, line, _target(session, line, line.debtor_id), by, "statement_line.confirmed")


def assign_line(session: Session, line_id: int, debtor_id: int, by: Resolver) -> StatementLine:
    """Pay the line to a debtor the agent chose (of the same creditor)."""
    line = _open_line(session, line_id, allowed=QUEUE_STATUSES)
    debtor = session.get(Debtor, debtor_id)
    if debtor is None or debtor.creditor_id != line.creditor_id:
        raise ReconcileError("no such debtor for this creditor")
    line.match_rule = "manual"
    line.score = None
    if line.debtor_id != debtor_id:
        line.invoice_id = None  # a suggested invoice belonged to the suggested debtor
    return _pay(session, line, _target(session, line, debtor_id), by, "statement_line.assigned")


def ignore_line(session: Session, line_id: int, by: Resolver) -> StatementLine:
    """Take the line out of the queue without a payment (a refund from a supplier, an internal transfer)."""
    line = _open_line(session, line_id, allowed=QUEUE_STATUSES)
    previous = line.status
    line.status = "ignored"
    line.resolved_by_id = by.agent_id
    audit.record(session, by.actor, "statement_line.ignored", line, previous=previous).occurred_at = by.now
    return line


def _open_line(session: Session, line_id: int, allowed: tuple[str, ...]) -> StatementLine:
    line = session.scalars(select(StatementLine).where(StatementLine.id == line_id).with_for_update()).one_or_none()
    if line is None:
        raise LookupError(f"no statement line {line_id}")
    if line.status not in allowed:
        raise ReconcileError(f"this line is already {line.status}")
    return line


def _target(session: Session, line: StatementLine, debtor_id: int) -> Target:
    invoice = session.get(Invoice, line.invoice_id) if line.invoice_id else None
    if invoice is None or invoice.debtor_id != debtor_id or invoice.currency != line.currency:
        return Target(debtor_id)
    return Target(debtor_id, invoice.id, invoice.number)


def _pay(session: Session, line: StatementLine, target: Target, by: Resolver, action: str) -> StatementLine:
    batch = session.get_one(ImportBatch, line.batch_id)
    creditor = session.get_one(Creditor, line.creditor_id)
    received_at = datetime.combine(line.booked_on, clock_time(12), ZoneInfo(creditor.timezone)).astimezone(UTC)
    provider = provider_of(str(batch.summary.get("format", "statement")))
    line.payment_id = pay_line(session, line, target, provider, received_at, by.actor, by.now, by.settings)
    line.debtor_id = target.debtor_id
    line.status = "confirmed"
    line.resolved_by_id = by.agent_id
    audit.record(
        session, by.actor, action, line, debtor_id=target.debtor_id, payment_id=line.payment_id
    ).occurred_at = by.now
    return line
