"""The managers' numbers against a small portfolio whose answers are worked out by hand (SQLite and PostgreSQL).

Period: November 2026 in Santiago (UTC-3 in summer), i.e. [2026-11-01 03:00 UTC, 2026-12-01 03:00 UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session

from bot.models import (
    AuditEvent,
    Conversation,
    Creditor,
    Debtor,
    Invoice,
    Message,
    Payment,
    PaymentPlan,
    PromiseToPay,
)
from bot.reports import Dashboard, Ratio, ReportError, ReportFilter, build_dashboard, week_starts
from bot.store import Database

SANTIAGO = "America/Santiago"
NOV, DEC, OCT = date(2026, 11, 1), date(2026, 12, 1), date(2026, 10, 1)


def at(day: int, hour: int = 12, month: int = 11, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@dataclass(frozen=True)
class Portfolio:
    aguas: int
    luz: int


def _debtor(session: Session, creditor: Creditor, ref: str, segment: str) -> Debtor:
    debtor = Debtor(creditor_id=creditor.id, external_ref=ref, name=ref, segment=segment, timezone=SANTIAGO)
    session.add(debtor)
    session.flush()
    return debtor


def _invoice(session: Session, debtor: Debtor, number: str, due: date, balance: int, status: str = "open") -> None:
    session.add(
        Invoice(
            creditor_id=debtor.creditor_id,
            debtor_id=debtor.id,
            number=number,
            due_date=due,
            amount_minor=balance or 1000,
            balance_minor=balance,
            currency="CLP",
            status=status,
        )
    )


def _pay(session: Session, debtor: Debtor, ref: str, amount: int, when: datetime, **extra: object) -> None:
    fields: dict[str, object] = {"currency": "CLP", "status": "confirmed", "refunded_minor": 0} | extra
    session.add(
        Payment(
            creditor_id=debtor.creditor_id,
            debtor_id=debtor.id,
            provider="test",
            provider_payment_id=ref,
            amount_minor=amount,
            received_at=when,
            **fields,
        )
    )


def _message(session: Session, debtor: Debtor, direction: str, channel: str, when: datetime, status: str) -> None:
    session.add(
        Message(debtor_id=debtor.id, direction=direction, channel=channel, created_at=when, delivery_status=status)
    )


def _handoff(session: Session, debtor: Debtor, handed: datetime, *events: tuple[str, datetime]) -> None:
    conversation = Conversation(
        debtor_id=debtor.id, channel="sms", address="x", mode="human", handoff_reason="asked", handoff_at=handed
    )
    session.add(conversation)
    session.flush()
    for action, when in events:
        session.add(
            AuditEvent(
                actor="ana",
                action=action,
                subject_type="conversation",
                subject_id=str(conversation.id),
                occurred_at=when,
            )
        )


@pytest.fixture
def portfolio(db: Database) -> Portfolio:
    with db.session() as session:
        aguas = Creditor(slug="aguas", name="Aguas", currency="CLP", timezone=SANTIAGO, default_locale="es-CL")
        luz = Creditor(slug="luz", name="Luz", currency="CLP", timezone=SANTIAGO, default_locale="es-CL")
        session.add_all([aguas, luz])
        session.flush()
        ana = _debtor(session, aguas, "ANA", "retail")
        bruno = _debtor(session, aguas, "BRUNO", "pyme")
        carla = _debtor(session, luz, "CARLA", "retail")
        _invoices(session, ana, bruno, carla)
        _payments(session, ana, bruno, carla)
        _promises_and_plans(session, ana, bruno)
        _messages(session, ana, bruno, carla)
        _handoffs(session, ana, bruno)
        session.commit()
        return Portfolio(aguas.id, luz.id)


def _invoices(session: Session, ana: Debtor, bruno: Debtor, carla: Debtor) -> None:
    # As of 2026-11-30 (November's last day): not due, then 0, 30, 31, 90 and 91 days past due.
    _invoice(session, ana, "A-1", date(2026, 12, 10), 1000)
    _invoice(session, ana, "A-2", date(2026, 11, 30), 2000)
    _invoice(session, ana, "A-3", date(2026, 10, 31), 3000)
    _invoice(session, bruno, "B-4", date(2026, 10, 30), 4000)
    _invoice(session, bruno, "B-5", date(2026, 9, 1), 6000)
    _invoice(session, bruno, "B-6", date(2026, 8, 31), 5000)
    _invoice(session, ana, "A-7", date(2026, 10, 1), 0, status="paid")
    _invoice(session, bruno, "B-8", date(2026, 10, 1), 800, status="disputed")
    _invoice(session, carla, "C-1", date(2026, 11, 20), 3000)


def _payments(session: Session, ana: Debtor, bruno: Debtor, carla: Debtor) -> None:
    _pay(session, ana, "p1", 10000, at(5))
    _pay(session, ana, "p2", 5000, at(10), refunded_minor=1300)  # partial refund: nets 3700
    _pay(session, bruno, "p3", 2000, at(12), status="refunded", refunded_minor=2000)  # nets 0
    _pay(session, bruno, "p4", 9999, at(1, hour=2))  # 23:00 on Oct 31 in Santiago: October
    _pay(session, ana, "p5", 500, at(6), status="failed")
    _pay(session, bruno, "p6", 2500, at(20), currency="USD")
    _pay(session, carla, "p7", 7000, at(15))


def _promises_and_plans(session: Session, ana: Debtor, bruno: Debtor) -> None:
    for debtor, status, resolved in (
        (ana, "kept", at(3)),
        (bruno, "kept", at(25)),
        (ana, "broken", at(8)),
        (ana, "pending", None),
        (bruno, "kept", at(20, month=10)),
    ):
        session.add(
            PromiseToPay(
                debtor_id=debtor.id,
                amount_minor=1000,
                currency="CLP",
                promised_date=date(2026, 11, 1),
                status=status,
                resolved_at=resolved,
            )
        )
    for status, created in (
        ("active", at(2)),
        ("broken", at(9)),
        ("completed", at(16)),
        ("proposed", at(17)),
        ("active", at(20, month=10)),
    ):
        session.add(
            PaymentPlan(
                debtor_id=ana.id,
                status=status,
                currency="CLP",
                total_minor=9000,
                installment_count=3,
                created_at=created,
            )
        )


def _messages(session: Session, ana: Debtor, bruno: Debtor, carla: Debtor) -> None:
    # sms: sent 3 (queued not), delivered 2; messaged ana+bruno; only ana wrote after her first message.
    _message(session, ana, "out", "sms", at(3), "delivered")
    _message(session, ana, "out", "sms", at(4), "read")
    _message(session, ana, "in", "sms", at(4, hour=13), "received")
    _message(session, bruno, "in", "sms", at(5, hour=11), "received")  # before his first message: no reply
    _message(session, bruno, "out", "sms", at(5), "failed")
    _message(session, bruno, "out", "sms", at(6), "queued")
    _message(session, ana, "out", "sms", at(30, month=10), "delivered")  # October
    # email: bruno sent 1 (not yet delivered) and replied.
    _message(session, bruno, "out", "email", at(7), "sent")
    _message(session, bruno, "in", "email", at(8), "received")
    _message(session, ana, "in", "whatsapp", at(8), "received")  # never messaged there: no channel row
    _message(session, carla, "out", "sms", at(10), "delivered")  # the other creditor


def _handoffs(session: Session, ana: Debtor, bruno: Debtor) -> None:
    _handoff(session, ana, at(10, hour=10), ("conversation.resolved", at(10, hour=12)))  # 120 min: within 4 h
    _handoff(
        session,
        bruno,
        at(11, hour=10),
        ("conversation.resolved", at(1, hour=10)),  # before the handoff: an earlier episode
        ("conversation.returned_to_bot", at(11, hour=15)),  # 300 min: late
        ("conversation.resolved", at(12, hour=9)),
    )
    _handoff(session, ana, at(12, hour=10))  # never resolved: counts against the SLA
    _handoff(session, ana, at(20, hour=10, month=10), ("conversation.resolved", at(20, hour=11, month=10)))
    session.add(AuditEvent(actor="x", action="conversation.resolved", subject_type="case", subject_id="1"))


def _november(
    session: Session, creditor: int | None = None, segment: str | None = None, tz: str = SANTIAGO
) -> Dashboard:
    return build_dashboard(session, ReportFilter(creditor, segment, NOV, DEC), tz)


def test_collected_nets_refunds_per_currency_in_the_creditors_period(db: Database, portfolio: Portfolio) -> None:
    with db.session() as session:
        report = _november(session, portfolio.aguas)
    assert report.collected == {"CLP": 13700, "USD": 2500}  # 10000 + (5000 - 1300) + (2000 - 2000)


def test_recovery_rate_is_collected_over_collected_plus_open_balance_due_before_the_end(
    db: Database, portfolio: Portfolio
) -> None:
    with db.session() as session:
        report = _november(session, portfolio.aguas)
    # open, due before Dec 1: 2000 + 3000 + 4000 + 6000 + 5000; A-1 (Dec 10), paid and disputed left out
    assert report.open_balance == {"CLP": 20000}
    assert report.recovery == {"CLP": Ratio(13700, 33700), "USD": Ratio(2500, 2500)}


def test_aging_buckets_as_of_the_periods_last_day(db: Database, portfolio: Portfolio) -> None:
    with db.session() as session:
        report = _november(session, portfolio.aguas)
    assert report.aging == {
        "not_due": {"CLP": 1000},
        "0-30": {"CLP": 5000},  # 0 and 30 days
        "31-60": {"CLP": 4000},
        "61-90": {"CLP": 6000},  # exactly 90 days
        "90+": {"CLP": 5000},  # 91 days
    }


def test_promises_kept_among_those_resolved_in_the_period_and_plans_created_in_it(
    db: Database, portfolio: Portfolio
) -> None:
    with db.session() as session:
        report = _november(session, portfolio.aguas)
    assert report.promises_kept == Ratio(2, 3)
    assert report.plans == {"active": 1, "broken": 1, "completed": 1}


def test_channel_delivery_and_response(db: Database, portfolio: Portfolio) -> None:
    with db.session() as session:
        report = _november(session, portfolio.aguas)
    by_channel = {stats.channel: stats for stats in report.channels}
    assert sorted(by_channel) == ["email", "sms"]
    sms, email = by_channel["sms"], by_channel["email"]
    assert (sms.sent, sms.delivered, sms.messaged, sms.replied) == (3, 2, 2, 1)
    assert sms.delivery == Ratio(2, 3) and sms.response == Ratio(1, 2)
    assert (email.sent, email.delivered, email.messaged, email.replied) == (1, 0, 1, 1)


def test_handoffs_within_sla_and_median_minutes(db: Database, portfolio: Portfolio) -> None:
    with db.session() as session:
        handoffs = _november(session, portfolio.aguas).handoffs
    assert (handoffs.count, handoffs.resolved) == (3, 2)
    assert handoffs.within_sla == Ratio(1, 3)
    assert handoffs.median_minutes == pytest.approx(210.0)  # median of 120 and 300


def test_collected_per_iso_week(db: Database, portfolio: Portfolio) -> None:
    with db.session() as session:
        weeks = _november(session, portfolio.aguas).weeks
    # Nov 1 2026 is a Sunday (ISO week 44); then Mondays 2, 9, 16, 23, 30.
    assert [week.label for week in weeks] == ["2026-W44", "2026-W45", "2026-W46", "2026-W47", "2026-W48", "2026-W49"]
    assert [week.amounts for week in weeks] == [{}, {"CLP": 10000}, {"CLP": 3700}, {"USD": 2500}, {}, {}]


def test_filters_by_segment_creditor_and_period(db: Database, portfolio: Portfolio) -> None:
    with db.session() as session:
        pyme = _november(session, portfolio.aguas, "pyme")
        everyone = _november(session)
        retail = _november(session, None, "retail")
        luz = _november(session, portfolio.luz)
        october = build_dashboard(session, ReportFilter(portfolio.aguas, None, OCT, NOV), SANTIAGO)
        utc = _november(session, portfolio.aguas, tz="UTC")
    assert pyme.collected == {"CLP": 0, "USD": 2500}
    assert pyme.aging["0-30"] == {} and pyme.aging["90+"] == {"CLP": 5000}
    assert pyme.promises_kept == Ratio(1, 1) and pyme.handoffs.count == 1
    assert everyone.collected == {"CLP": 20700, "USD": 2500}
    assert retail.collected == {"CLP": 20700}  # ana 13700 + carla 7000
    assert luz.collected == {"CLP": 7000} and luz.open_balance == {"CLP": 3000}
    assert [(s.channel, s.sent, s.delivered) for s in luz.channels] == [("sms", 1, 1)]
    assert october.collected == {"CLP": 9999}
    assert october.promises_kept == Ratio(1, 1) and october.handoffs.within_sla == Ratio(1, 1)
    assert utc.collected == {"CLP": 23699, "USD": 2500}  # 02:00 UTC on Nov 1 is November in UTC


def test_an_empty_portfolio_gives_zeros_not_errors(db: Database) -> None:
    with db.session() as session:
        report = build_dashboard(session, ReportFilter(None, None, NOV, DEC), SANTIAGO)
    assert report.collected == {} and report.recovery == {} and report.channels == []
    assert report.promises_kept.value is None and report.handoffs.median_minutes is None
    assert report.plans == {"active": 0, "broken": 0, "completed": 0}


def test_bad_periods_are_refused() -> None:
    with pytest.raises(ReportError, match="after its start"):
        ReportFilter(None, None, NOV, NOV)
    with pytest.raises(ReportError, match="366 days"):
        ReportFilter(None, None, date(2025, 1, 1), date(2026, 11, 1))


def test_week_starts_clip_to_the_period() -> None:
    assert week_starts(ReportFilter(None, None, date(2026, 11, 4), date(2026, 11, 17))) == [
        date(2026, 11, 4),
        date(2026, 11, 9),
        date(2026, 11, 16),
    ]
