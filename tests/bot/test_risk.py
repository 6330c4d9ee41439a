"""The risk score: each factor's value and points, the total, the segment, and the bulk update."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session

from bot.models import Debtor, Installment, Invoice, Message, Outbox, Payment, PaymentPlan, PromiseToPay
from bot.risk import RiskInputs, _analyze_if_never_analyzed, score, score_debtors, segment_of

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_a_fresh_debtor_not_yet_due_is_low_risk():
    result = score(RiskInputs(days_past_due=0, balance_minor=10_000, median_balance_minor=10_000, payments=3))
    assert result.factors == {
        "days_past_due": {"value": 0, "points": 0},
        "amount": {"value": 1.0, "points": 5},
        "payment_history": {"value": 3, "points": 0},
        "broken_commitments": {"value": 0, "points": 0},
        "responsiveness": {"value": None, "points": 5},
    }
    assert (result.score, result.segment) == (10, "low")


def test_a_long_overdue_large_silent_debtor_with_broken_promises_is_high_risk():
    inputs = RiskInputs(
        days_past_due=120, balance_minor=400_000, median_balance_minor=100_000, payments=0,
        broken_commitments=3, bot_messages=10, answered_48h=1,
    )  # fmt: skip
    result = score(inputs)
    points = {name: factor["points"] for name, factor in result.factors.items()}
    assert points == {
        "days_past_due": 40,
        "amount": 15,
        "payment_history": 15,
        "broken_commitments": 20,
        "responsiveness": 10,
    }
    assert (result.score, result.segment) == (100, "high")
    assert result.factors["responsiveness"]["value"] == 0.1
    assert score(inputs) == result  # deterministic


def test_segment_boundaries():
    assert [segment_of(s) for s in (0, 29, 30, 59, 60, 100)] == ["low", "low", "medium", "medium", "high", "high"]


def test_score_debtors_updates_score_factors_and_segment(db, make_creditor, make_debtor):
    creditor = make_creditor()
    late = make_debtor(
        creditor, external_ref="L", invoices=[{"number": "L-1", "amount": "300000", "due_date": date(2026, 8, 1)}]
    )
    fine = make_debtor(
        creditor, external_ref="F", invoices=[{"number": "F-1", "amount": "10000", "due_date": date(2026, 12, 20)}],
        phone="+56 9 6123 4568", email="f@example.cl",
    )  # fmt: skip
    with db.session() as session:
        session.add(PromiseToPay(debtor_id=late.id, amount_minor=1000, currency="CLP", promised_date=date(2026, 9, 1),
                                 status="broken"))  # fmt: skip
        session.add(Payment(creditor_id=creditor.id, debtor_id=fine.id, provider="api", provider_payment_id="p1",
                            amount_minor=5000, currency="CLP", received_at=NOW - timedelta(days=40)))  # fmt: skip
        for hours in (0, 72):
            sent = Message(
                debtor_id=fine.id,
                direction="out",
                channel="sms",
                body="x",
                created_at=NOW - timedelta(days=5, hours=hours),
            )
            session.add(sent)
            session.flush()
            session.add(Outbox(message_id=sent.id, channel="sms", initiated_by="bot", status="sent"))
        session.add(
            Message(debtor_id=fine.id, direction="in", channel="sms", body="ok", created_at=NOW - timedelta(days=4))
        )
        assert score_debtors(session, creditor.id, NOW) == 2
        session.commit()
    with db.session() as session:
        rows = {d.external_ref: d for d in session.scalars(select(Debtor))}
    assert rows["L"].risk_factors["days_past_due"] == {"value": 116, "points": 40}
    assert rows["L"].risk_factors["broken_commitments"] == {"value": 1, "points": 10}
    assert rows["L"].segment == "high" and rows["L"].risk_score == 40 + 10 + 15 + 10 + 5
    assert rows["F"].risk_factors["responsiveness"] == {"value": 0.5, "points": 0}
    assert rows["F"].risk_factors["payment_history"] == {"value": 1, "points": 5}
    assert rows["F"].segment == "low"


# --- paging: the same scores as scoring every debtor at once ---------------------------------------------------


def _portfolio(session: Session, creditors: list[int], rng: random.Random) -> None:
    """Debtors of two creditors with interleaved ids and every kind of input: open, paid, disputed and
    zero-balance invoices, payments (some pending, some booked to the other creditor), promises, missed
    installments, bot and agent messages (sent and failed, inside and outside the lookback) and replies
    inside and outside 48 h."""
    for n in range(16):
        creditor_id = creditors[n % 2]
        debtor = Debtor(creditor_id=creditor_id, external_ref=f"R{n}", name="Ana", risk_factors={})
        session.add(debtor)
        session.flush()
        for k in range(rng.randint(0, 3)):
            amount = rng.randrange(1_000, 400_000)
            session.add(Invoice(
                creditor_id=creditor_id, debtor_id=debtor.id, number=f"{n}-{k}", amount_minor=amount,
                balance_minor=rng.choice([0, amount, amount // 2]), currency="CLP",
                due_date=NOW.date() + timedelta(days=rng.randint(-150, 20)),
                status=rng.choice(["open", "open", "paid", "disputed"]),
            ))  # fmt: skip
        for k in range(rng.randint(0, 4)):
            session.add(Payment(
                creditor_id=rng.choice([creditor_id, creditor_id, creditors[(n + 1) % 2]]), debtor_id=debtor.id,
                provider="api", provider_payment_id=f"p{n}-{k}", amount_minor=1_000, currency="CLP",
                status=rng.choice(["confirmed", "confirmed", "pending"]),
            ))  # fmt: skip
        for _ in range(rng.randint(0, 3)):
            session.add(PromiseToPay(
                debtor_id=debtor.id, amount_minor=1_000, currency="CLP", promised_date=date(2026, 10, 1),
                status=rng.choice(["broken", "pending", "kept"]),
            ))  # fmt: skip
        if rng.random() < 0.5:
            plan = PaymentPlan(debtor_id=debtor.id, currency="CLP", total_minor=3_000, installment_count=3)
            plan.installments = [
                Installment(seq=seq, due_date=date(2026, 10, seq), amount_minor=1_000,
                            status=rng.choice(["missed", "paid", "pending"]))
                for seq in (1, 2, 3)
            ]  # fmt: skip
            session.add(plan)
        _messages(session, debtor.id, rng)
    session.commit()


def _messages(session: Session, debtor_id: int, rng: random.Random) -> None:
    for k in range(rng.randint(0, 5)):
        at = NOW - timedelta(days=rng.choice([2, 10, 60, 89, 95]), hours=rng.randint(0, 23))
        sent = Message(debtor_id=debtor_id, direction="out", channel="sms", body="x", created_at=at)
        session.add(sent)
        session.flush()
        session.add(Outbox(message_id=sent.id, channel="sms", initiated_by=rng.choice(["bot", "bot", "agent"]),
                           status=rng.choice(["sent", "sent", "failed"])))  # fmt: skip
        for hours in rng.sample([-3, 1, 30, 47, 49, 100], rng.randint(0, 2)):
            session.add(Message(debtor_id=debtor_id, direction="in", channel="sms", body=f"r{k}",
                                created_at=at + timedelta(hours=hours)))  # fmt: skip


def _scored_all_at_once(session: Session, creditor_id: int) -> dict[int, tuple[float, dict[str, Any], str]]:
    """What scoring stored before paging, computed here from every row in plain Python: the oracle."""
    debtors = session.scalars(select(Debtor.id).where(Debtor.creditor_id == creditor_id)).all()
    balances: dict[int, int] = Counter()
    oldest: dict[int, date] = {}
    for invoice in session.scalars(select(Invoice).where(Invoice.creditor_id == creditor_id)):
        if invoice.status == "open" and invoice.balance_minor > 0:
            balances[invoice.debtor_id] += invoice.balance_minor
            oldest[invoice.debtor_id] = min(invoice.due_date, oldest.get(invoice.debtor_id, invoice.due_date))
    median = int(statistics.median(balances.values())) if balances else 0
    payments = Counter(
        p.debtor_id
        for p in session.scalars(select(Payment))
        if p.creditor_id == creditor_id and p.status == "confirmed"
    )
    broken = Counter(p.debtor_id for p in session.scalars(select(PromiseToPay)) if p.status == "broken")
    for plan in session.scalars(select(PaymentPlan)):
        broken[plan.debtor_id] += sum(i.status == "missed" for i in plan.installments)
    messages = session.scalars(select(Message)).all()
    outbox = {o.message_id: o for o in session.scalars(select(Outbox))}
    sent: dict[int, int] = Counter()
    answered: dict[int, int] = Counter()
    for message in messages:
        box = outbox.get(message.id)
        if box and box.initiated_by == "bot" and box.status == "sent" and message.created_at >= NOW - timedelta(90):
            sent[message.debtor_id] += 1
            answered[message.debtor_id] += any(
                reply.debtor_id == message.debtor_id and reply.direction == "in"
                and message.created_at < reply.created_at <= message.created_at + timedelta(hours=48)
                for reply in messages
            )  # fmt: skip
    expected = {}
    for debtor_id in debtors:
        result = score(RiskInputs(
            days_past_due=max(0, (NOW.date() - oldest[debtor_id]).days) if debtor_id in oldest else 0,
            balance_minor=balances[debtor_id], median_balance_minor=median, payments=payments[debtor_id],
            broken_commitments=broken[debtor_id], bot_messages=sent[debtor_id], answered_48h=answered[debtor_id],
        ))  # fmt: skip
        expected[debtor_id] = (float(result.score), result.factors, result.segment)
    return expected


@pytest.mark.parametrize("batch_size", [1, 3, 5, 1000])
def test_paged_scores_equal_scoring_all_debtors_at_once(db, make_creditor, batch_size):
    creditors = [make_creditor(slug="a").id, make_creditor(slug="b").id]
    stale = datetime(2020, 1, 1, tzinfo=UTC)
    with db.session() as session:
        _portfolio(session, creditors, random.Random(11))
        session.execute(sa_update(Debtor).values(risk_score=None, risk_factors={}, segment=None, updated_at=stale))
        session.commit()
        expected = {creditor_id: _scored_all_at_once(session, creditor_id) for creditor_id in creditors}
    # The data must exercise both medians (odd and even count of owing debtors) and the responsiveness factor.
    assert {len({f["amount"]["value"] for _s, f, _g in e.values()}) > 1 for e in expected.values()} == {True}
    with db.session() as session:
        owing = [
            session.scalar(select(func.count(func.distinct(Invoice.debtor_id))).where(
                Invoice.creditor_id == c, Invoice.status == "open", Invoice.balance_minor > 0))
            for c in creditors
        ]  # fmt: skip
    assert {n % 2 for n in owing} == {0, 1}
    assert any(
        f["responsiveness"]["value"] not in (None, 0.0, 1.0) for e in expected.values() for _s, f, _g in e.values()
    )

    with db.session() as session:
        counts = [score_debtors(session, creditor_id, NOW, batch_size=batch_size) for creditor_id in creditors]
        session.commit()
    assert counts == [8, 8]
    with db.session() as session:
        debtors = session.scalars(select(Debtor)).all()
    for debtor in debtors:
        assert (debtor.risk_score, debtor.risk_factors, debtor.segment) == expected[debtor.creditor_id][debtor.id]
        assert debtor.updated_at > stale


def test_scoring_sends_a_bounded_number_of_statements_per_page(db, make_creditor):
    creditor_id = make_creditor().id
    with db.session() as session:
        for n in range(10):
            debtor = Debtor(creditor_id=creditor_id, external_ref=f"S{n}", name="Ana", risk_factors={})
            session.add(debtor)
            session.flush()
            session.add(Invoice(creditor_id=creditor_id, debtor_id=debtor.id, number=f"S{n}", amount_minor=100,
                                balance_minor=100, currency="CLP", due_date=date(2026, 10, 1)))  # fmt: skip
            session.add(PromiseToPay(debtor_id=debtor.id, amount_minor=1, currency="CLP",
                                     promised_date=date(2026, 10, 1), status="broken"))  # fmt: skip
            _messages(session, debtor.id, random.Random(n))
        session.commit()
    statements: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE")):  # not SQLite's BEGIN
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        for batch_size in (5, 10):
            statements.clear()
            with db.session() as session:
                assert score_debtors(session, creditor_id, NOW, batch_size=batch_size) == 10
                session.commit()
            pages = 10 // batch_size
            # median (count + middle), then per page: inputs, bot messages, replies, update; then the empty page
            # (and on PostgreSQL one look at pg_class for tables without statistics)
            statistics_check = 1 if db.dialect == "postgresql" else 0
            assert len(statements) <= statistics_check + 2 + 4 * pages + 1, statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def test_tables_never_analyzed_get_statistics_before_scoring_on_postgresql(db):
    if db.dialect != "postgresql":
        pytest.skip("planner statistics are PostgreSQL's")
    with db.session() as session:
        # A throwaway schema in a transaction that is rolled back: the suite's own tables may be analyzed already.
        session.execute(text("CREATE SCHEMA risk_stats_probe"))
        session.execute(text("SET LOCAL search_path TO risk_stats_probe"))
        session.execute(text("CREATE TABLE debtors (id integer)"))
        session.execute(text("INSERT INTO debtors SELECT generate_series(1, 3)"))
        reltuples = text("SELECT reltuples FROM pg_class WHERE oid = 'risk_stats_probe.debtors'::regclass")
        assert session.scalar(reltuples) == -1
        _analyze_if_never_analyzed(session)
        assert session.scalar(reltuples) == 3
        session.rollback()
