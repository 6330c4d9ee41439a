"""The managers' numbers for one creditor (or all), one segment (or all) and one period [start, end).

Set-based SQL only (aggregates and GROUP BY), the same on SQLite and PostgreSQL: every cutoff date and instant
is computed here in Python and bound as a parameter; the only Python loop is over the period's handoffs.

Definitions (docs/console.md repeats them for managers):

- period: the local calendar days [start, end) in the report's time zone; timestamps are compared with the UTC
  instants of those local midnights.
- collected, per currency: sum(amount_minor - refunded_minor) of payments (confirmed or refunded) received in
  the period. A partial refund lowers it by the refunded part; a full refund nets to zero.
- recovery rate, per currency: collected / (collected + open balance), where the open balance is the
  balance_minor of invoices with status open that fall due before the period's end.
- promises kept %: kept / (kept + broken) among promises resolved (resolved_at) in the period.
- plans: plans created in the period, counted by their status now (active, broken, completed).
- aging: the open balance (status open) by days past due on the period's last day (end - 1 day):
  not due yet, 0-30, 31-60, 61-90, 90+ days.
- channels, per channel, over outbound messages created in the period: sent = not queued (nor cancelled
  before sending); delivered = delivered or read; delivery rate = delivered / sent; debtors messaged = distinct
  debtors sent a message; replied = those of them who wrote in on that channel in the period after their first
  message of the period there; response rate = replied / messaged.
- handoffs: conversations handed to a person (handoff_at) in the period. Resolution = the first
  conversation.resolved or conversation.returned_to_bot audit event at or after the handoff. Within SLA =
  resolved no later than handoff_at + HANDOFF_SLA (unresolved ones count against it); median minutes to
  resolution over the resolved ones.
- collected per ISO week: the same sum, one bucket per ISO week (Monday to Sunday) clipped to the period.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, String, and_, case, cast, distinct, func, select
from sqlalchemy.orm import Session, aliased

from bot.debtors import OWED
from bot.effects import HANDOFF_SLA
from bot.models import AuditEvent, Conversation, Debtor, Invoice, Message, Payment, PaymentPlan, PromiseToPay

COUNTED_PAYMENTS = ("confirmed", "refunded")
NOT_SENT = ("queued", "cancelled")
REACHED = ("delivered", "read")
RESOLUTIONS = ("conversation.resolved", "conversation.returned_to_bot")
PLAN_STATUSES = ("active", "broken", "completed")
AGING_BUCKETS = ("not_due", "0-30", "31-60", "61-90", "90+")
MAX_PERIOD = timedelta(days=366)


class ReportError(ValueError):
    """A filter the report cannot answer; the message says why."""


@dataclass(frozen=True, slots=True)
class ReportFilter:
    creditor_id: int | None
    segment: str | None
    start: date
    end: date  # exclusive

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ReportError("the period's end ('to') must be after its start ('from')")
        if self.end - self.start > MAX_PERIOD:
            raise ReportError("the period may be at most 366 days long")

    @property
    def as_of(self) -> date:
        """The period's last day: aging is measured on it."""
        return self.end - timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Ratio:
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None


@dataclass(frozen=True, slots=True)
class Week:
    label: str  # ISO week, "2026-W45"
    start: date  # the week's first day inside the period
    amounts: dict[str, int]  # currency -> minor units collected


@dataclass(frozen=True, slots=True)
class ChannelStats:
    channel: str
    sent: int
    delivered: int
    messaged: int  # distinct debtors
    replied: int  # distinct debtors

    @property
    def delivery(self) -> Ratio:
        return Ratio(self.delivered, self.sent)

    @property
    def response(self) -> Ratio:
        return Ratio(self.replied, self.messaged)


@dataclass(frozen=True, slots=True)
class HandoffStats:
    count: int
    resolved: int
    within_sla: Ratio  # resolved within HANDOFF_SLA / all handoffs of the period
    median_minutes: float | None


@dataclass(frozen=True, slots=True)
class Dashboard:
    filters: ReportFilter
    timezone: str
    collected: dict[str, int]
    open_balance: dict[str, int]  # open invoices due before the period's end
    promises: dict[str, int]  # kept, broken
    plans: dict[str, int]
    aging: dict[str, dict[str, int]]  # bucket -> currency -> minor units
    channels: list[ChannelStats]
    handoffs: HandoffStats
    weeks: list[Week]

    @property
    def currencies(self) -> list[str]:
        aged = {currency for amounts in self.aging.values() for currency in amounts}
        return sorted(set(self.collected) | set(self.open_balance) | aged)

    @property
    def recovery(self) -> dict[str, Ratio]:
        rates = {}
        for currency in self.currencies:
            collected = self.collected.get(currency, 0)
            rates[currency] = Ratio(collected, collected + self.open_balance.get(currency, 0))
        return rates

    @property
    def promises_kept(self) -> Ratio:
        kept = self.promises.get("kept", 0)
        return Ratio(kept, kept + self.promises.get("broken", 0))


def local_midnight(day: date, timezone: str) -> datetime:
    return datetime.combine(day, time(0), ZoneInfo(timezone)).astimezone(UTC)


def build_dashboard(session: Session, filters: ReportFilter, timezone: str = "UTC") -> Dashboard:
    period = _Period(filters, timezone)
    return Dashboard(
        filters=filters,
        timezone=timezone,
        collected=collected_by_currency(session, period),
        open_balance=open_balance_by_currency(session, period),
        promises=promises_by_status(session, period),
        plans=plans_by_status(session, period),
        aging=aging_buckets(session, period),
        channels=channel_stats(session, period),
        handoffs=handoff_stats(session, period),
        weeks=collected_per_week(session, period),
    )


@dataclass(frozen=True, slots=True)
class _Period:
    filters: ReportFilter
    timezone: str

    @property
    def start_at(self) -> datetime:
        return local_midnight(self.filters.start, self.timezone)

    @property
    def end_at(self) -> datetime:
        return local_midnight(self.filters.end, self.timezone)

    def holds(self, column: Any) -> ColumnElement[bool]:
        return and_(column >= self.start_at, column < self.end_at)

    def scoped(self, query: Select[Any], debtor_id: Any) -> Select[Any]:
        """Restrict a query with a debtor id column to the filter's creditor and segment."""
        if self.filters.creditor_id is None and self.filters.segment is None:
            return query
        query = query.join(Debtor, Debtor.id == debtor_id)
        if self.filters.creditor_id is not None:
            query = query.where(Debtor.creditor_id == self.filters.creditor_id)
        if self.filters.segment is not None:
            query = query.where(Debtor.segment == self.filters.segment)
        return query


# --- money ---------------------------------------------------------------------------------------------------

_net = func.coalesce(func.sum(Payment.amount_minor - Payment.refunded_minor), 0)


def _payments(period: _Period, *columns: Any) -> Select[Any]:
    query = select(*columns).where(Payment.status.in_(COUNTED_PAYMENTS), period.holds(Payment.received_at))
    if period.filters.creditor_id is not None:
        # Payments carry their creditor; unmatched ones (no debtor yet) still count for it.
        query = query.where(Payment.creditor_id == period.filters.creditor_id)
    if period.filters.segment is not None:
        query = query.join(Debtor, Debtor.id == Payment.debtor_id).where(Debtor.segment == period.filters.segment)
    return query


def collected_by_currency(session: Session, period: _Period) -> dict[str, int]:
    rows = session.execute(_payments(period, Payment.currency, _net).group_by(Payment.currency))
    return {currency: int(total) for currency, total in rows}


def week_starts(filters: ReportFilter) -> list[date]:
    """The first day inside the period of each ISO week it touches: the period's start, then every Monday."""
    starts = [filters.start]
    monday = filters.start + timedelta(days=7 - filters.start.weekday())
    while monday < filters.end:
        starts.append(monday)
        monday += timedelta(days=7)
    return starts


def collected_per_week(session: Session, period: _Period) -> list[Week]:
    """One GROUP BY over a CASE that maps each payment's instant to its week (local Mondays as UTC instants)."""
    starts = week_starts(period.filters)
    edges = [local_midnight(day, period.timezone) for day in starts[1:]]
    week = case(*[(Payment.received_at < edge, index) for index, edge in enumerate(edges)], else_=len(edges))
    rows = session.execute(_payments(period, week, Payment.currency, _net).group_by(week, Payment.currency))
    amounts: list[dict[str, int]] = [{} for _ in starts]
    for index, currency, total in rows:
        amounts[int(index)][currency] = int(total)
    return [Week(_iso_week(day), day, amounts[index]) for index, day in enumerate(starts)]


def _iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def open_balance_by_currency(session: Session, period: _Period) -> dict[str, int]:
    query = period.scoped(select(Invoice.currency, func.sum(Invoice.balance_minor)), Invoice.debtor_id)
    rows = session.execute(
        query.where(Invoice.status == "open", Invoice.due_date < period.filters.end).group_by(Invoice.currency)
    )
    return {currency: int(total or 0) for currency, total in rows}


def aging_buckets(session: Session, period: _Period) -> dict[str, dict[str, int]]:
    """Open balance by days past due on `as_of`: due_date compared with dates computed here, never in SQL."""
    as_of = period.filters.as_of
    bucket = case(
        (Invoice.due_date > as_of, "not_due"),
        (Invoice.due_date >= as_of - timedelta(days=30), "0-30"),
        (Invoice.due_date >= as_of - timedelta(days=60), "31-60"),
        (Invoice.due_date >= as_of - timedelta(days=90), "61-90"),
        else_="90+",
    )
    query = period.scoped(select(bucket, Invoice.currency, func.sum(Invoice.balance_minor)), Invoice.debtor_id)
    rows = session.execute(query.where(*OWED).group_by(bucket, Invoice.currency))
    result: dict[str, dict[str, int]] = {name: {} for name in AGING_BUCKETS}
    for name, currency, total in rows:
        result[name][currency] = int(total)
    return result


# --- promises and plans --------------------------------------------------------------------------------------


def promises_by_status(session: Session, period: _Period) -> dict[str, int]:
    query = period.scoped(select(PromiseToPay.status, func.count()), PromiseToPay.debtor_id)
    rows = session.execute(query.where(period.holds(PromiseToPay.resolved_at)).group_by(PromiseToPay.status))
    counts = {"kept": 0, "broken": 0}
    counts.update({status: int(n) for status, n in rows})
    return counts


def plans_by_status(session: Session, period: _Period) -> dict[str, int]:
    query = period.scoped(select(PaymentPlan.status, func.count()), PaymentPlan.debtor_id)
    rows = session.execute(
        query.where(period.holds(PaymentPlan.created_at), PaymentPlan.status.in_(PLAN_STATUSES)).group_by(
            PaymentPlan.status
        )
    )
    counts = dict.fromkeys(PLAN_STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


# --- channels ------------------------------------------------------------------------------------------------


def _sent(period: _Period, message: Any, *columns: Any) -> Select[Any]:
    query = select(*columns).select_from(message)
    query = query.where(
        message.direction == "out",
        message.delivery_status.not_in(NOT_SENT),
        period.holds(message.created_at),
    )
    return period.scoped(query, message.debtor_id)


def channel_stats(session: Session, period: _Period) -> list[ChannelStats]:
    reached = func.sum(case((Message.delivery_status.in_(REACHED), 1), else_=0))
    delivery = session.execute(
        _sent(period, Message, Message.channel, func.count(), reached, func.count(distinct(Message.debtor_id)))
        .group_by(Message.channel)
        .order_by(Message.channel)
    ).all()
    replied = _replied_by_channel(session, period)
    return [
        ChannelStats(channel, int(sent), int(hit or 0), int(messaged), replied.get(channel, 0))
        for channel, sent, hit, messaged in delivery
    ]


def _replied_by_channel(session: Session, period: _Period) -> dict[str, int]:
    """Distinct debtors with an inbound message in the period after their first outbound one there."""
    sent = aliased(Message, name="sent")
    first = (
        _sent(period, sent, sent.debtor_id, sent.channel, func.min(sent.created_at).label("first_at"))
        .group_by(sent.debtor_id, sent.channel)
        .subquery()
    )
    reply = aliased(Message, name="reply")
    query = (
        select(first.c.channel, func.count(distinct(reply.debtor_id)))
        .select_from(first)
        .join(
            reply,
            and_(
                reply.debtor_id == first.c.debtor_id,
                reply.channel == first.c.channel,
                reply.direction == "in",
                reply.created_at > first.c.first_at,
                period.holds(reply.created_at),
            ),
        )
        .group_by(first.c.channel)
    )
    return {channel: int(n) for channel, n in session.execute(query)}


# --- handoffs ------------------------------------------------------------------------------------------------


def handoff_stats(session: Session, period: _Period) -> HandoffStats:
    resolved_at = (
        select(func.min(AuditEvent.occurred_at))
        .where(
            AuditEvent.subject_type == "conversation",
            AuditEvent.subject_id == cast(Conversation.id, String),
            AuditEvent.action.in_(RESOLUTIONS),
            AuditEvent.occurred_at >= Conversation.handoff_at,
        )
        .correlate(Conversation)
        .scalar_subquery()
    )
    query = period.scoped(select(Conversation.handoff_at, resolved_at), Conversation.debtor_id)
    # One row per handoff of the period (never the whole table): the median needs the values themselves.
    rows = session.execute(query.where(period.holds(Conversation.handoff_at))).all()
    waits = [_aware(done) - _aware(handed) for handed, done in rows if done is not None]
    within = sum(1 for wait in waits if wait <= HANDOFF_SLA)
    minutes = [wait.total_seconds() / 60 for wait in waits]
    return HandoffStats(
        count=len(rows),
        resolved=len(waits),
        within_sla=Ratio(within, len(rows)),
        median_minutes=statistics.median(minutes) if minutes else None,
    )


def _aware(value: datetime | str) -> datetime:
    # A scalar subquery's result skips the column type, so SQLite hands back text or a naive datetime.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def segments(session: Session) -> Sequence[str]:
    """Distinct debtor segments, for the dashboard's segment filter."""
    query = select(Debtor.segment).where(Debtor.segment.is_not(None)).distinct().order_by(Debtor.segment)
    return list(session.scalars(query))
