"""An explainable risk score per debtor: 0..100 from five factors, each with its value and the points it added.

`score()` is pure; `score_debtors()` walks a creditor's debtors in keyset pages, gathers each page's inputs with
a few set-based queries and writes Debtor.risk_score / risk_factors / segment in one bulk UPDATE per page.
The segment picks the reminder cadence (bot/campaigns.py).
See docs/campaigns.md for the point tables.
"""

from __future__ import annotations

import json
import statistics
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, exists, func, select, text, update
from sqlalchemy.orm import Session

from bot.debtors import OWED
from bot.domain import utcnow
from bot.models import (
    Debtor,
    Installment,
    Invoice,
    Message,
    Outbox,
    Payment,
    PaymentPlan,
    PromiseToPay,
    UTCDateTime,
)

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


def score_debtors(session: Session, creditor_id: int, now: datetime, *, batch_size: int = 1000) -> int:
    """Score every debtor of a creditor and store score, factors and segment; returns how many were scored.

    Debtors are walked in keyset pages of `batch_size` (by id): each page's inputs come from one statement of
    per-debtor aggregates plus two for its messages, and its scores go back in one bulk UPDATE, so memory stays
    flat however many debtors the creditor has. Only the creditor's median open balance spans every debtor; the
    database computes it.
    """
    if session.get_bind().dialect.name == "postgresql":
        _analyze_if_never_analyzed(session)
    median = median_open_balance(session, creditor_id)
    scored = after = 0
    while page := session.execute(_page_inputs(creditor_id, after, batch_size)).all():
        up_to = page[-1].id
        sent, answered = _responsiveness(session, creditor_id, (after, up_to), now)
        rows = [_scored_row(row, median, now.date(), sent.get(row.id, 0), answered.get(row.id, 0)) for row in page]
        _write_scores(session, rows)
        scored += len(rows)
        after = up_to
    return scored


INPUT_TABLES = (
    "debtors",
    "invoices",
    "payments",
    "promises_to_pay",
    "payment_plans",
    "installments",
    "messages",
    "outbox",
)


def _analyze_if_never_analyzed(session: Session) -> None:
    """ANALYZE the tables scoring reads that PostgreSQL has no statistics for (reltuples -1: never analyzed,
    e.g. just after a bulk load with autovacuum yet to run, or off). Without them the planner guesses a handful
    of debtors per creditor and reads a page by sorting all the creditor's remaining debtors instead of walking
    the primary key: every page then costs O(N) and the whole run O(N²)."""
    never = session.scalars(
        text(
            "SELECT c.relname FROM pg_class AS c WHERE c.relname = ANY(:tables) AND c.reltuples < 0 "
            "AND c.relnamespace = to_regnamespace(current_schema())"
        ),
        {"tables": list(INPUT_TABLES)},
    ).all()
    for table in never:
        session.execute(text(f'ANALYZE "{table}"'))  # names from INPUT_TABLES, not from input


def _open_invoices_of(debtor_id: Any, creditor_id: int) -> tuple[Any, ...]:
    return (
        Invoice.debtor_id == debtor_id,
        Invoice.creditor_id == creditor_id,
        *OWED,
    )


def median_open_balance(session: Session, creditor_id: int) -> int:
    """The median of the creditor's debtors' open balances (debtors owing nothing left out), as the old
    `int(statistics.median(...))`: the database sorts the balances and only the middle one or two come back."""
    balances = (
        select(func.sum(Invoice.balance_minor).label("balance"))
        .where(*_open_invoices_of(Invoice.debtor_id, creditor_id))
        .group_by(Invoice.debtor_id)
        .subquery()
    )
    count = session.scalar(select(func.count()).select_from(balances)) or 0
    if not count:
        return 0
    middle = session.scalars(
        select(balances.c.balance).order_by(balances.c.balance).offset((count - 1) // 2).limit(2 - count % 2)
    )
    return int(statistics.median(int(balance) for balance in middle))


def _page_inputs(creditor_id: int, after: int, size: int) -> Select[Any]:
    """The next `size` debtors after id `after`, each with its inputs as correlated aggregates (index lookups
    per debtor on the database, one round trip per page)."""
    of_debtor = _open_invoices_of(Debtor.id, creditor_id)
    missed_installments = (
        select(func.count())
        .select_from(Installment)
        .join(PaymentPlan, PaymentPlan.id == Installment.plan_id)
        .where(PaymentPlan.debtor_id == Debtor.id, Installment.status == "missed")
    )
    return (
        select(
            Debtor.id,
            select(func.sum(Invoice.balance_minor)).where(*of_debtor).scalar_subquery().label("balance"),
            select(func.min(Invoice.due_date)).where(*of_debtor).scalar_subquery().label("oldest_due"),
            select(func.count())
            .where(Payment.debtor_id == Debtor.id, Payment.creditor_id == creditor_id, Payment.status == "confirmed")
            .scalar_subquery()
            .label("payments"),
            select(func.count())
            .where(PromiseToPay.debtor_id == Debtor.id, PromiseToPay.status == "broken")
            .scalar_subquery()
            .label("broken_promises"),
            missed_installments.scalar_subquery().label("missed_installments"),
        )
        .where(Debtor.creditor_id == creditor_id, Debtor.id > after)
        .order_by(Debtor.id)
        .limit(size)
    )


def _scored_row(page_row: Any, median: int, today: date, sent: int, answered: int) -> dict[str, Any]:
    due = page_row.oldest_due
    result = score(
        RiskInputs(
            days_past_due=max(0, (today - due).days) if due else 0,
            balance_minor=int(page_row.balance or 0),
            median_balance_minor=median,
            payments=page_row.payments,
            broken_commitments=page_row.broken_promises + page_row.missed_installments,
            bot_messages=sent,
            answered_48h=answered,
        )
    )
    return {"id": page_row.id, "score": float(result.score), "factors": result.factors, "segment": result.segment}


# One statement for the whole page on PostgreSQL, its rows sent as one JSON document: json.dumps is C, while
# psycopg escapes a text[] array of JSON strings quote by quote in Python (half the run's time in a profile).
PG_WRITE_SCORES = text(
    "UPDATE debtors AS d SET risk_score = u.score, risk_factors = u.factors, segment = u.segment, updated_at = :now "
    "FROM json_to_recordset(CAST(:rows AS json)) AS u(id integer, score float8, factors json, segment text) "
    "WHERE d.id = u.id"
).bindparams(bindparam("now", type_=UTCDateTime()))

WRITE_SCORES = (
    update(Debtor.__table__)
    .where(Debtor.__table__.c.id == bindparam("debtor_id"))
    .values(risk_score=bindparam("score"), risk_factors=bindparam("factors"), segment=bindparam("segment"))
)


def _write_scores(session: Session, rows: list[dict[str, Any]]) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(PG_WRITE_SCORES, {"now": utcnow(), "rows": json.dumps(rows)})
    else:  # Core executemany (updated_at comes from the column's onupdate)
        session.execute(WRITE_SCORES, [{"debtor_id": row.pop("id"), **row} for row in rows])


def _responsiveness(
    session: Session, creditor_id: int, page: tuple[int, int], now: datetime
) -> tuple[dict[int, int], dict[int, int]]:
    """Per debtor of the page (ids in `after < id <= up_to`): bot messages sent in the lookback, and how many of
    them an inbound message followed within 48 h."""
    since = now - RESPONSIVENESS_LOOKBACK
    after, up_to = page
    of_page = (
        Message.debtor_id > after,
        Message.debtor_id <= up_to,
        Message.created_at >= since,
        # Other creditors' debtors can have ids inside the page's range.
        exists().where(Debtor.id == Message.debtor_id, Debtor.creditor_id == creditor_id),
    )
    bot_sent = session.execute(
        select(Message.debtor_id, Message.created_at)
        .join(Outbox, Outbox.message_id == Message.id)
        .where(*of_page, Outbox.initiated_by == "bot", Outbox.status == "sent")
    ).all()
    if not bot_sent:  # most pages of a large portfolio: no need to read the inbound messages
        return {}, {}
    inbound: dict[int, list[datetime]] = defaultdict(list)
    for debtor_id, at in session.execute(
        select(Message.debtor_id, Message.created_at).where(*of_page, Message.direction == "in")
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
