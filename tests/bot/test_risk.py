"""The risk score: each factor's value and points, the total, the segment, and the bulk update."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from bot.models import Debtor, Message, Outbox, Payment, PromiseToPay
from bot.risk import RiskInputs, score, score_debtors, segment_of

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
