"""An explainable risk score per debtor: 0..100 from five factors, each with its value and the points it added.

`score()` is pure; `score_debtors()` gathers the inputs for a whole creditor in a handful of grouped queries and
writes Debtor.risk_score / risk_factors / segment in bulk. The segment picks the reminder cadence (bot/campaigns.py).
See docs/campaigns.md for the point tables.
"""

from __future__ import annotations

import statistics
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.models import Debtor, Installment, Invoice, Message, Outbox, Payment, PaymentPlan, PromiseToPay

ANSWER_WINDOW = timedelta(hours=48)
RESPONSIVENESS_LOOKBACK = timedelta(days=90)
SEGMENTS = ("low", "medium", "high")
# Upper bounds (inclusive) of days past due -> points; beyond the last bound the last points apply.
DAYS_BANDS = ((0, 0), (15, 10), (30, 20), (60, 30), (90, 35))
DAYS_MAX_POINTS = 40
# Upper bounds of balance / creditor median balance -> points.
AMOUNT_BANDS = ((0.5, 0), (1.5, 5), (3.0, 10))
AMOUNT_MAX_POINTS = 15
POINTS_PER_BROKEN, BROKEN_MAX_POINTS = 10, 20


@dataclass(frozen=True, slots=True)
class RiskInputs:
    days_past_due: int = 0
    balance_minor: int = 0
    median_balance_minor: int = 0
    payments: int = 0
    broken_commitments: int = 0  # broken promises + missed installments
    bot_messages: int = 0
    answered_48h: int = 0


@dataclass(frozen=True, slots=True)
class RiskScore:
    score: int
    factors: dict[str, dict[str, Any]]
    segment: str


def _band(value: float, bands: Iterable[tuple[float, int]], beyond: int) -> int:
    for bound, points in bands:
        if value <= bound:
            return points
    return beyond


def segment_of(score: int) -> str:
    return "low" if score < 30 else "medium" if score < 60 else "high"


def score(inputs: RiskInputs) -> RiskScore:
    """The score and, per factor, what was measured and how many points it gave."""
    ratio = inputs.balance_minor / inputs.median_balance_minor if inputs.median_balance_minor else 0.0
    share = inputs.answered_48h / inputs.bot_messages if inputs.bot_messages else None
    factors = {
        "days_past_due": {
            "value": inputs.days_past_due,
            "points": _band(inputs.days_past_due, DAYS_BANDS, DAYS_MAX_POINTS),
        },
        "amount": {"value": round(ratio, 2), "points": _band(ratio, AMOUNT_BANDS, AMOUNT_MAX_POINTS)},
        "payment_history": {
            "value": inputs.payments,
            "points": 15 if inputs.payments == 0 else 5 if inputs.payments < 3 else 0,
        },
        "broken_commitments": {
            "value": inputs.broken_commitments,
            "points": min(BROKEN_MAX_POINTS, POINTS_PER_BROKEN * inputs.broken_commitments),
        },
        "responsiveness": {
            "value": None if share is None else round(share, 2),
            "points": _responsiveness_points(inputs, share),
        },
    }
    total = max(0, min(100, sum(factor["points"] for factor in factors.values())))
    return RiskScore(total, factors, segment_of(total))


def _responsiveness_points(inputs: RiskInputs, share: float | None) -> int:
    # Fewer than two bot messages say little about a debtor: a small "unknown" weight instead of a verdict.
    if share is None or inputs.bot_messages < 2:
        return 5
    return 0 if share >= 0.5 else 5 if share >= 0.2 else 10


def score_debtors(session: Session, creditor_id: int, now: datetime) -> int:
    """Score every debtor of a creditor and store score, factors and segment; returns how many were scored."""
    debtor_ids = list(session.scalars(select(Debtor.id).where(Debtor.creditor_id == creditor_id)))
    if not debtor_ids:
        return 0
    balances, oldest_due = _open_balances(session, creditor_id)
    median = int(statistics.median(balances.values())) if balances else 0
    payments = _count_by_debtor(
        session,
        select(Payment.debtor_id, func.count()).where(
            Payment.creditor_id == creditor_id, Payment.status == "confirmed"
        ),
    )
    broken = _broken_commitments(session, creditor_id)
    sent, answered = _responsiveness(session, creditor_id, now)
    today = now.date()
    rows = []
    for debtor_id in debtor_ids:
        due = oldest_due.get(debtor_id)
        result = score(
            RiskInputs(
                days_past_due=max(0, (today - due).days) if due else 0,
                balance_minor=balances.get(debtor_id, 0),
                median_balance_minor=median,
                payments=payments.get(debtor_id, 0),
                broken_commitments=broken.get(debtor_id, 0),
                bot_messages=sent.get(debtor_id, 0),
                answered_48h=answered.get(debtor_id, 0),
            )
        )
        rows.append(
            {
                "id": debtor_id,
                "risk_score": float(result.score),
                "risk_factors": result.factors,
                "segment": result.segment,
            }
        )
    for start in range(0, len(rows), 1000):
        session.execute(update(Debtor), rows[start : start + 1000])
    return len(rows)


def _open_balances(session: Session, creditor_id: int) -> tuple[dict[int, int], dict[int, date]]:
    query = (
        select(Invoice.debtor_id, func.sum(Invoice.balance_minor), func.min(Invoice.due_date))
        .where(Invoice.creditor_id == creditor_id, Invoice.status == "open", Invoice.balance_minor > 0)
        .group_by(Invoice.debtor_id)
    )
    balances: dict[int, int] = {}
    oldest: dict[int, date] = {}
    for debtor_id, balance, due in session.execute(query):
        balances[debtor_id] = int(balance)
        oldest[debtor_id] = due
    return balances, oldest


def _count_by_debtor(session: Session, query: Any) -> dict[int, int]:
    return {debtor_id: int(count) for debtor_id, count in session.execute(query.group_by(query.selected_columns[0]))}


def _broken_commitments(session: Session, creditor_id: int) -> dict[int, int]:
    of_creditor = select(Debtor.id).where(Debtor.creditor_id == creditor_id).scalar_subquery()
    promises = _count_by_debtor(
        session,
        select(PromiseToPay.debtor_id, func.count()).where(
            PromiseToPay.status == "broken", PromiseToPay.debtor_id.in_(of_creditor)
        ),
    )
    missed = _count_by_debtor(
        session,
        select(PaymentPlan.debtor_id, func.count())
        .join(Installment, Installment.plan_id == PaymentPlan.id)
        .where(Installment.status == "missed", PaymentPlan.debtor_id.in_(of_creditor)),
    )
    return {key: promises.get(key, 0) + missed.get(key, 0) for key in promises.keys() | missed.keys()}


def _responsiveness(session: Session, creditor_id: int, now: datetime) -> tuple[dict[int, int], dict[int, int]]:
    """Bot messages sent in the lookback, and how many of them an inbound message followed within 48 h."""
    since = now - RESPONSIVENESS_LOOKBACK
    of_creditor = Message.debtor_id.in_(select(Debtor.id).where(Debtor.creditor_id == creditor_id).scalar_subquery())
    bot_sent = session.execute(
        select(Message.debtor_id, Message.created_at)
        .join(Outbox, Outbox.message_id == Message.id)
        .where(of_creditor, Outbox.initiated_by == "bot", Outbox.status == "sent", Message.created_at >= since)
    )
    inbound: Mapping[int, list[datetime]] = defaultdict(list)
    for debtor_id, at in session.execute(
        select(Message.debtor_id, Message.created_at).where(
            of_creditor, Message.direction == "in", Message.created_at >= since
        )
    ):
        inbound[debtor_id].append(at)
    for times in inbound.values():
        times.sort()
    sent: dict[int, int] = defaultdict(int)
    answered: dict[int, int] = defaultdict(int)
    for debtor_id, at in bot_sent:
        sent[debtor_id] += 1
        times = inbound.get(debtor_id, [])
        nxt = bisect_right(times, at)
        answered[debtor_id] += nxt < len(times) and times[nxt] - at <= ANSWER_WINDOW
    return sent, answered
