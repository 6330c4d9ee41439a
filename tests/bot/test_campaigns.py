"""Cadences and bulk reminder planning: which steps, when (debtor's clock), once, to whom, in which words."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from bot import campaigns
from bot.campaigns import DEFAULT_CADENCE, PlanReport, plan_reminders, reminder_text, validate_cadence
from bot.models import (
    AuditEvent,
    Cadence,
    Case,
    ConsentOptOut,
    Debtor,
    Installment,
    Invoice,
    Message,
    Outbox,
    PaymentPlan,
    PromiseToPay,
    ScheduledReminder,
)

DUE = date(2026, 12, 5)


def one_invoice(number: str = "F-1", amount: str = "45990", due: date = DUE) -> list[dict[str, object]]:
    return [{"number": number, "amount": amount, "due_date": due}]


def plan(db, at: datetime) -> PlanReport:
    with db.session() as session:
        report = plan_reminders(session, at)
        session.commit()
        return report


def reminders(db) -> list[tuple[str, str, datetime, str]]:
    with db.session() as session:
        rows = session.execute(
            select(Invoice.number, ScheduledReminder.step_key, ScheduledReminder.due_at, ScheduledReminder.status)
            .join(Invoice, Invoice.id == ScheduledReminder.invoice_id)
            .order_by(Invoice.number, ScheduledReminder.step_key)
        )
        return [tuple(row) for row in rows]


def bodies(db, at: datetime) -> list[tuple[str, str]]:
    """The queued reminders' templates and the words the dispatcher would write for them at `at`."""
    with db.session() as session:
        rows = session.execute(
            select(Message, Outbox.id).join(Outbox, Outbox.message_id == Message.id).order_by(Message.id)
        ).all()
        assert all(message.body == "" for message, _ in rows)  # written at sending, not at planning
        return [
            (message.template_key, reminder_text(session, outbox_id, message.template_key, message.channel,
                                                 session.get_one(Debtor, message.debtor_id), at))
            for message, outbox_id in rows
        ]  # fmt: skip


# --- cadence validation ------------------------------------------------------------------------------------


def test_default_cadence_is_valid_and_ordered():
    assert [s.offset_days for s in DEFAULT_CADENCE.steps] == [-3, 0, 3, 7, 15, 30]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"key": "a", "offset_days": 0, "template": "reminder_overdue"}] * 2, "unique"),
        (
            [
                {"key": "a", "offset_days": 5, "template": "reminder_overdue"},
                {"key": "b", "offset_days": 1, "template": "reminder_overdue"},
            ],
            "increasing",
        ),
        ([{"key": "a", "offset_days": 0, "template": "no_such_template"}], "missing in es, en"),
        ([{"key": "inst:1", "offset_days": 0, "template": "reminder_overdue"}], "pattern"),
        ([{"key": "a", "offset_days": 0, "template": "reminder_overdue", "channels": ["fax"]}], "channels"),
        ([], "at least 1"),
    ],
)
def test_invalid_cadences_are_refused(steps, message):
    with pytest.raises(ValidationError, match=message):
        validate_cadence(steps)


# --- when ----------------------------------------------------------------------------------------------------


def test_steps_fall_at_ten_on_the_debtors_clock(db, make_creditor, make_debtor):
    creditor = make_creditor()
    make_debtor(creditor, external_ref="CL", timezone="America/Santiago", invoices=one_invoice("CL-1"))
    make_debtor(creditor, external_ref="MX", timezone="America/Mexico_City", invoices=one_invoice("MX-1"))
    # pre3 is 2 Dec 10:00 local: 13:00 UTC in Santiago (summer time, UTC-3), 16:00 UTC in Mexico City (UTC-6).
    assert plan(db, datetime(2026, 12, 2, 12, 59, tzinfo=UTC)).planned == 0
    assert plan(db, datetime(2026, 12, 2, 13, 0, tzinfo=UTC)).planned == 1
    assert plan(db, datetime(2026, 12, 2, 15, 59, tzinfo=UTC)).planned == 0
    assert plan(db, datetime(2026, 12, 2, 16, 0, tzinfo=UTC)).planned == 1
    assert reminders(db) == [
        ("CL-1", "pre3", datetime(2026, 12, 2, 13, tzinfo=UTC), "queued"),
        ("MX-1", "pre3", datetime(2026, 12, 2, 16, tzinfo=UTC), "queued"),
    ]


def test_running_twice_plans_once_and_the_next_step_follows(db, make_debtor):
    make_debtor(channel_preference=["sms"])
    assert plan(db, datetime(2026, 12, 2, 14, tzinfo=UTC)).messages == 1
    assert plan(db, datetime(2026, 12, 2, 18, tzinfo=UTC)).planned == 0
    assert plan(db, datetime(2026, 12, 5, 14, tzinfo=UTC)).planned == 1
    assert [(step, status) for _, step, _, status in reminders(db)] == [("due", "queued"), ("pre3", "queued")]
    assert [key for key, _ in bodies(db, datetime(2026, 12, 5, 14, tzinfo=UTC))] == [
        "reminder_before_due",
        "reminder_due_today",
    ]


def test_a_debt_entering_late_gets_only_the_latest_step(db, make_debtor):
    make_debtor(invoices=one_invoice(due=date(2026, 11, 5)))  # 20 days overdue on the clock's day
    plan(db, datetime(2026, 11, 25, 15, tzinfo=UTC))
    assert [step for _, step, _, _ in reminders(db)] == ["od15"]
    plan(db, datetime(2026, 11, 26, 15, tzinfo=UTC))
    assert [step for _, step, _, _ in reminders(db)] == ["od15"]


def test_two_planners_racing_plan_each_step_once(db, make_creditor, make_debtor):
    creditor = make_creditor()
    for n in range(30):
        make_debtor(creditor, external_ref=f"R{n}", invoices=one_invoice(f"R-{n}", due=date(2026, 11, 20)))
    now = datetime(2026, 11, 25, 15, tzinfo=UTC)
    barrier = threading.Barrier(2)
    reports: list[PlanReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with db.session() as session:
                barrier.wait()
                reports.append(plan_reminders(session, now, batch_size=7))
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r.planned for r in reports) == 30 and sum(r.messages for r in reports) == 30
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ScheduledReminder)) == 30
        assert session.scalar(select(func.count()).select_from(Outbox)) == 30


# --- who leaves the sequence -----------------------------------------------------------------------------------


def test_paid_planned_disputed_promised_and_opted_out_debts_are_left_alone(db, make_creditor, make_debtor):
    creditor = make_creditor()
    overdue = date(2026, 11, 20)
    make_debtor(
        creditor,
        external_ref="PAID",
        invoices=[{"number": "PAID-1", "amount": "100", "balance": "0", "due_date": overdue}],
    )
    in_plan = make_debtor(creditor, external_ref="PLAN", invoices=one_invoice("PLAN-1", due=overdue))
    disputed = make_debtor(creditor, external_ref="DISP", invoices=one_invoice("DISP-1", due=overdue))
    cased = make_debtor(creditor, external_ref="CASE", invoices=one_invoice("CASE-1", due=overdue))
    opted = make_debtor(creditor, external_ref="OPT", invoices=one_invoice("OPT-1", due=overdue))
    promised = make_debtor(creditor, external_ref="PROM", invoices=one_invoice("PROM-1", due=overdue))
    make_debtor(creditor, external_ref="OK", invoices=one_invoice("OK-1", due=overdue))
    with db.session() as session:
        session.add(_plan(session, in_plan.id, [date(2026, 12, 20)]))
        session.get(Invoice, disputed.invoices[0].id).status = "disputed"
        session.add(Case(debtor_id=cased.id, kind="dispute"))
        session.add(ConsentOptOut(debtor_id=opted.id, channel="all", source="keyword"))
        session.add(
            PromiseToPay(debtor_id=promised.id, amount_minor=100, currency="CLP", promised_date=date(2026, 11, 30))
        )
        session.commit()
    plan(db, datetime(2026, 11, 25, 15, tzinfo=UTC))
    assert [number for number, *_ in reminders(db)] == ["OK-1"]


def test_no_reachable_channel_skips_with_a_reason(db, make_debtor):
    debtor = make_debtor(channel_preference=["sms"], email=None)
    with db.session() as session:
        session.add(ConsentOptOut(debtor_id=debtor.id, channel="sms", source="keyword"))
        session.commit()
    report = plan(db, datetime(2026, 12, 2, 14, tzinfo=UTC))
    assert (report.planned, report.skipped, report.messages) == (1, 1, 0)
    with db.session() as session:
        row = session.scalars(select(ScheduledReminder)).one()
    assert (row.status, row.reason, row.outbox_id) == ("skipped", "no reachable channel", None)


def test_step_channels_limit_the_choice(db, make_creditor, make_debtor):
    creditor = make_creditor()
    make_debtor(creditor, channel_preference=["sms", "email"])
    with db.session() as session:
        steps = [{"key": "mail", "offset_days": -3, "template": "reminder_before_due", "channels": ["email"]}]
        session.add(Cadence(creditor_id=creditor.id, segment="default", steps=steps))
        session.commit()
    plan(db, datetime(2026, 12, 2, 14, tzinfo=UTC))
    with db.session() as session:
        assert session.scalars(select(Outbox.channel)).all() == ["email"]


def test_the_segment_picks_the_cadence(db, make_creditor, make_debtor):
    creditor = make_creditor()
    debtor = make_debtor(creditor)
    with db.session() as session:
        steps = [{"key": "early", "offset_days": -10, "template": "reminder_before_due"}]
        session.add(Cadence(creditor_id=creditor.id, segment="high", steps=steps))
        session.merge(debtor).segment = "high"
        session.commit()
    plan(db, datetime(2026, 11, 25, 15, tzinfo=UTC))
    assert [step for _, step, _, _ in reminders(db)] == ["early"]


# --- plans ---------------------------------------------------------------------------------------------------


def _plan(session, debtor_id: int, dues: list[date]) -> PaymentPlan:
    invoices = list(session.scalars(select(Invoice).where(Invoice.debtor_id == debtor_id)))
    plan_row = PaymentPlan(debtor_id=debtor_id, status="active", currency="CLP", total_minor=45990,
                           installment_count=len(dues), invoices=invoices)  # fmt: skip
    plan_row.installments = [Installment(seq=n + 1, due_date=d, amount_minor=15330) for n, d in enumerate(dues)]
    return plan_row


def test_installments_are_reminded_on_their_day(db, make_debtor):
    debtor = make_debtor(invoices=one_invoice(due=date(2026, 11, 1)))
    with db.session() as session:
        session.add(_plan(session, debtor.id, [date(2026, 11, 30), date(2026, 12, 30)]))
        session.commit()
    plan(db, datetime(2026, 11, 29, 15, tzinfo=UTC))
    assert reminders(db) == []  # the debt is in an active plan: no cadence; the installment is not due yet
    plan(db, datetime(2026, 11, 30, 13, tzinfo=UTC))
    plan(db, datetime(2026, 11, 30, 20, tzinfo=UTC))
    [(_, step, due_at, status)] = reminders(db)
    assert step.startswith("inst:") and step.endswith(":due") and due_at == datetime(2026, 11, 30, 13, tzinfo=UTC)
    assert status == "queued"
    assert bodies(db, datetime(2026, 11, 30, 20, tzinfo=UTC)) == [
        ("reminder_installment_due", "Hola Ana, hoy vence su cuota de $15.330 de su plan con Aguas del Valle. "
                                     "Gracias por mantenerse al día.")
    ]  # fmt: skip


def test_a_missed_installment_breaks_the_plan_and_the_debt_returns(db, make_debtor):
    debtor = make_debtor(invoices=one_invoice(due=date(2026, 11, 1)))
    with db.session() as session:
        session.add(_plan(session, debtor.id, [date(2026, 11, 20), date(2026, 12, 20)]))
        session.commit()
    report = plan(db, datetime(2026, 11, 25, 15, tzinfo=UTC))
    assert report.missed_installments == 1 and report.messages == 1
    with db.session() as session:
        assert session.scalars(select(Installment.status).order_by(Installment.seq)).all() == ["missed", "pending"]
        assert session.scalars(select(PaymentPlan.status)).one() == "broken"
        assert set(session.scalars(select(AuditEvent.action))) >= {"installment.missed", "plan.broken"}
    steps = [step for _, step, _, _ in reminders(db)]
    # One message covers both the missed notice and the cadence step the returning debt was due for.
    assert steps[0].startswith("missed:inst:") and steps[1] == "od15"
    assert [key for key, _ in bodies(db, datetime(2026, 11, 25, 15, tzinfo=UTC))] == ["reminder_installment_missed"]
    assert plan(db, datetime(2026, 11, 25, 18, tzinfo=UTC)).planned == 0


# --- what is said --------------------------------------------------------------------------------------------


def test_several_due_invoices_make_one_message(db, make_debtor):
    make_debtor(
        invoices=[
            {"number": "F-1", "amount": "10000", "due_date": date(2026, 11, 10)},
            {"number": "F-2", "amount": "20000", "due_date": date(2026, 11, 18)},
            {"number": "F-3", "amount": "5500", "due_date": date(2026, 11, 22)},
        ]
    )
    report = plan(db, datetime(2026, 11, 25, 15, tzinfo=UTC))
    assert (report.planned, report.messages, report.queued) == (3, 1, 3)
    [(key, body)] = bodies(db, datetime(2026, 11, 25, 15, tzinfo=UTC))
    assert key == "reminder_overdue"
    assert "tiene 3 documentos vencidos por $35.500" in body and "10 de noviembre de 2026" in body
    with db.session() as session:
        assert len(set(session.scalars(select(ScheduledReminder.outbox_id)))) == 1


def test_messages_are_rendered_in_the_debtors_language_and_money(db, make_creditor, make_debtor):
    creditor = make_creditor(currency="USD")
    make_debtor(creditor, external_ref="ES", locale="es-MX", timezone="America/Mexico_City",
                invoices=[{"number": "E-1", "amount": "1234.50", "currency": "MXN", "due_date": DUE}])  # fmt: skip
    make_debtor(creditor, external_ref="EN", locale="en-US", timezone="America/New_York",
                invoices=[{"number": "N-1", "amount": "1234.50", "currency": "USD", "due_date": DUE}])  # fmt: skip
    plan(db, datetime(2026, 12, 5, 18, tzinfo=UTC))
    texts = [body for _, body in bodies(db, datetime(2026, 12, 5, 18, tzinfo=UTC))]
    assert any("hoy vence su documento con Aguas del Valle por $1,234.50" in text for text in texts)
    assert any("your document with Aguas del Valle for $1,234.50 is due today" in text for text in texts)


def test_committed_pages_survive_a_failure_and_the_rerun_plans_only_the_rest(
    db, make_creditor, make_debtor, monkeypatch
):
    creditor = make_creditor()
    for n in range(3):
        make_debtor(
            creditor,
            external_ref=f"C-{n}",
            phone=f"+56 9 6123 456{n}",
            national_id=None,
            invoices=one_invoice(number=f"F-{n}"),
        )
    real_pages = campaigns.debtor_pages

    def two_pages_then_crash(*args, **kwargs):
        for number, page in enumerate(real_pages(*args, **kwargs)):
            if number == 2:
                raise RuntimeError("worker killed")
            yield page

    monkeypatch.setattr(campaigns, "debtor_pages", two_pages_then_crash)
    at = datetime(2026, 12, 2, 14, tzinfo=UTC)
    with db.session() as session, pytest.raises(RuntimeError):
        plan_reminders(session, at, batch_size=1, commit_pages=True)
    assert len(reminders(db)) == 2  # the two finished pages were committed, not rolled back with the third

    monkeypatch.setattr(campaigns, "debtor_pages", real_pages)
    with db.session() as session:
        assert plan_reminders(session, at, batch_size=1, commit_pages=True).planned == 1
    assert len(reminders(db)) == 3
