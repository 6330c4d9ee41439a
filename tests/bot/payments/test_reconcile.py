"""Bank-statement reconciliation: the outcome of every rule, idempotent re-imports and overlapping statements,
money conservation, and the agent's queue actions (confirm, assign, ignore)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.config import Settings
from bot.importer import UnknownCreditorError
from bot.models import (
    AuditEvent,
    Creditor,
    Debtor,
    ImportBatch,
    Installment,
    Invoice,
    Outbox,
    Payment,
    PaymentAllocation,
    PaymentLink,
    PaymentPlan,
    ScheduledReminder,
    StatementLine,
)
from bot.payments.reconcile import ReconcileError, import_statement
from bot.payments.reconcile_queue import Resolver, assign_line, confirm_line, ignore_line
from bot.payments.statements import BANCOESTADO, GENERIC, StatementFileError
from bot.store import Database
from tests.conftest import FixedClock

EXAMPLE = Path(__file__).parents[3] / "examples" / "statement_bancoestado.csv"
HEADER = "Fecha;N° Operación;Descripción;Cargos;Abonos;Saldo\n"
DEBTORS = [  # external_ref, name, invoice, balance
    ("C-1001", "Ana María Pérez", "F-1001", 45990),
    ("C-1002", "Jorge Muñoz", "F-1002", 10000),
    ("C-1003", "Camila Rojas", "F-1003", 30000),
    ("C-1004", "Pedro Soto", "F-1004", 20000),
    ("C-1005", "Josefa Díaz", "F-1005", 20000),
]


@pytest.fixture
def creditor(make_creditor: Callable[..., Creditor]) -> Creditor:
    return make_creditor(slug="aguas")


@pytest.fixture
def debtors(creditor: Creditor, make_debtor: Callable[..., Debtor]) -> dict[str, Debtor]:
    made = {}
    for index, (ref, name, number, balance) in enumerate(DEBTORS):
        made[ref] = make_debtor(
            creditor,
            external_ref=ref,
            name=name,
            phone=f"+56 9 6123 45{index:02d}",
            email=f"{ref.lower()}@example.cl",
            invoices=[{"number": number, "amount": str(balance), "due_date": date(2026, 12, 5)}],
        )
    return made


def run(db: Database, clock: FixedClock, data: bytes, name: str = "cartola.csv", settings: Settings | None = None):
    return import_statement(db, data, name, BANCOESTADO, "aguas", now=clock(), settings=settings)


def lines_by_no(db: Database) -> dict[int, StatementLine]:
    with db.session() as session:
        return {line.line_no: line for line in session.scalars(select(StatementLine))}


def count(db: Database, model: type) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_example_statement_gives_the_right_outcome_per_line(db, clock, debtors):
    report = run(db, clock, EXAMPLE.read_bytes())

    assert (report.lines, report.credits, report.debits) == (9, 6, 2)
    assert (report.matched, report.suggested, report.unmatched) == (2, 2, 2)
    assert [(error.line_no, "veinte mil" in error.reason) for error in report.errors] == [(15, True)]
    lines = lines_by_no(db)
    outcome = {no: (line.status, line.match_rule, line.debtor_id) for no, line in lines.items()}
    assert outcome == {
        7: ("matched", "reference", debtors["C-1001"].id),  # "PAGO F-1001"
        9: ("matched", "amount", debtors["C-1002"].id),  # 10.000 is only Jorge's, and the name agrees
        10: ("unmatched", None, None),  # 20.000 is owed by two debtors and nothing tells them apart
        11: ("suggested", "amount_name", debtors["C-1005"].id),  # same 20.000, but the payer is Josefa
        12: ("suggested", "fuzzy_name", debtors["C-1003"].id),  # "CAMILA ROJS" pays part of her balance
        13: ("unmatched", None, None),  # Pedro Soto's name, but 99.999 is more than he owes
    }
    with db.session() as session:
        paid = {inv.number: (inv.balance_minor, inv.status) for inv in session.scalars(select(Invoice))}
        payments = list(session.scalars(select(Payment)))
    assert paid["F-1001"] == (0, "paid") and paid["F-1002"] == (0, "paid")
    assert paid["F-1003"] == (30000, "open")  # a suggestion moves no money
    assert {p.provider for p in payments} == {"bank:bancoestado"}
    assert {p.provider_payment_id for p in payments} == {lines[7].fingerprint, lines[9].fingerprint}
    assert lines[7].payment_id is not None and lines[7].invoice_id is not None


def test_reimporting_the_same_file_changes_nothing(db, clock, debtors):
    first = run(db, clock, EXAMPLE.read_bytes())
    second = run(db, clock, EXAMPLE.read_bytes(), name="again.csv")

    assert second.already_imported and second.batch_id == first.batch_id
    assert (count(db, ImportBatch), count(db, StatementLine), count(db, Payment)) == (1, 6, 2)


def test_an_overlapping_statement_does_not_count_a_line_twice(db, clock, debtors):
    run(db, clock, EXAMPLE.read_bytes())
    overlap = (
        HEADER
        + "05/11/2026;100310;TRANSFERENCIA DE JORGE MUNOZ;;10.000;1.135.990\n"
        + "10/11/2026;100402;TRANSFERENCIA DE CAMILA ROJS;;15.000;1.190.990\n"
        + "20/11/2026;100600;PAGO C-1004;;20.000;1.310.989\n"
    )
    report = run(db, clock, overlap.encode(), name="cartola-2.csv")

    assert (report.credits, report.seen_before, report.matched) == (3, 2, 1)
    assert (count(db, StatementLine), count(db, Payment)) == (7, 3)
    with db.session() as session:
        soto = session.scalars(select(Invoice).where(Invoice.number == "F-1004")).one()
    assert soto.status == "paid"  # the external_ref C-1004 named him


def test_identical_lines_in_one_file_are_two_payments(db, clock, debtors):
    twice = HEADER + "05/11/2026;;PAGO C-1003;;10.000;0\n" * 2

    report = run(db, clock, twice.encode())

    assert report.matched == 2
    with db.session() as session:
        assert session.scalars(select(Invoice).where(Invoice.number == "F-1003")).one().balance_minor == 10000


def test_money_is_never_created_or_lost(db, clock, debtors):
    run(db, clock, EXAMPLE.read_bytes())
    extra = HEADER + "".join(f"2{i}/11/2026;9{i};PAGO C-1003;;7.000;0\n" for i in range(6))  # overpays by 12.000
    run(db, clock, extra.encode(), name="more.csv")

    with db.session() as session:
        paid = session.scalar(select(func.sum(Payment.amount_minor)))
        allocated = session.scalar(select(func.sum(PaymentAllocation.amount_minor)))
        reduced = session.scalar(select(func.sum(Invoice.amount_minor - Invoice.balance_minor)))
        on_account = session.scalar(
            select(func.sum(PaymentAllocation.amount_minor)).where(PaymentAllocation.invoice_id.is_(None))
        )
    assert paid == allocated == 45990 + 10000 + 42000
    assert reduced + on_account == paid and on_account == 12000


def test_payment_link_code_names_the_link_invoice(db, clock, creditor, make_debtor):
    debtor = make_debtor(
        creditor,
        invoices=[
            {"number": "F-1", "amount": "10000", "due_date": date(2026, 11, 1)},
            {"number": "F-2", "amount": "20000", "due_date": date(2026, 12, 1)},
        ],
    )
    with db.session() as session:
        newer = session.scalars(select(Invoice).where(Invoice.number == "F-2")).one()
        session.add(
            PaymentLink(
                debtor_id=debtor.id,
                token="t-1",
                short_code="aB3_x9Qk",
                invoice_id=newer.id,
                amount_minor=20000,
                currency="CLP",
                expires_at=clock() + timedelta(days=5),
            )
        )
        session.commit()

    report = run(db, clock, (HEADER + "05/11/2026;;TRANSF LINK AB3_X9QK;;20.000;0\n").encode())

    assert report.matched == 1
    with db.session() as session:
        balances = {inv.number: inv.balance_minor for inv in session.scalars(select(Invoice))}
    assert balances == {"F-1": 10000, "F-2": 0}  # the named invoice first, not the oldest


def test_two_debtors_codes_on_one_line_stay_unmatched(db, clock, debtors):
    report = run(db, clock, (HEADER + "05/11/2026;;PAGO F-1001 Y F-1002;;55.990;0\n").encode())

    assert (report.matched, report.unmatched) == (0, 1)


def test_a_match_cancels_reminders_and_queues_a_receipt(db, clock, debtors, settings):
    debtor = debtors["C-1002"]
    with db.session() as session:
        invoice = session.scalars(select(Invoice).where(Invoice.number == "F-1002")).one()
        session.add(
            ScheduledReminder(invoice_id=invoice.id, debtor_id=debtor.id, step_key="d-3", due_at=clock() + timedelta(1))
        )
        session.commit()

    run(db, clock, (HEADER + "05/11/2026;;PAGO F-1002;;10.000;0\n").encode(), settings=settings)

    with db.session() as session:
        assert session.scalars(select(ScheduledReminder.status)).one() == "cancelled"
        assert session.scalar(select(func.count()).select_from(Outbox)) == 1


def test_unknown_creditor_and_bad_file_write_nothing(db, clock, debtors):
    with pytest.raises(UnknownCreditorError):
        import_statement(db, EXAMPLE.read_bytes(), "x.csv", BANCOESTADO, "nobody", now=clock())
    with pytest.raises(StatementFileError):
        import_statement(db, b"just,some\nwords,here\n", "x.csv", GENERIC, "aguas", now=clock())

    assert (count(db, ImportBatch), count(db, StatementLine)) == (0, 0)


def resolver(clock: FixedClock) -> Resolver:
    return Resolver(agent_id=None, actor="agent:7", now=clock())


def test_confirming_a_suggestion_records_the_payment_once(db, clock, debtors):
    run(db, clock, EXAMPLE.read_bytes())
    line_id = lines_by_no(db)[12].id  # CAMILA ROJS, suggested

    with db.session() as session:
        confirm_line(session, line_id, resolver(clock))
        session.commit()
    with db.session() as session, pytest.raises(ReconcileError, match="already confirmed"):
        confirm_line(session, line_id, resolver(clock))

    line = lines_by_no(db)[12]
    assert (line.status, line.debtor_id) == ("confirmed", debtors["C-1003"].id)
    with db.session() as session:
        payments = list(session.scalars(select(Payment).where(Payment.provider_payment_id == line.fingerprint)))
        actions = list(session.scalars(select(AuditEvent.action).where(AuditEvent.subject_type == "statementline")))
        balance = session.scalars(select(Invoice.balance_minor).where(Invoice.number == "F-1003")).one()
    assert [p.amount_minor for p in payments] == [15000] and line.payment_id == payments[0].id
    assert actions == ["statement_line.confirmed"]
    assert balance == 15000


def test_assigning_an_unmatched_line_pays_the_chosen_debtor(db, clock, debtors):
    run(db, clock, EXAMPLE.read_bytes())
    line_id = lines_by_no(db)[10].id  # DEPOSITO EN EFECTIVO 20.000

    with db.session() as session:
        assign_line(session, line_id, debtors["C-1004"].id, resolver(clock))
        session.commit()

    line = lines_by_no(db)[10]
    assert (line.status, line.match_rule, line.debtor_id) == ("confirmed", "manual", debtors["C-1004"].id)
    with db.session() as session:
        assert session.scalars(select(Invoice.status).where(Invoice.number == "F-1004")).one() == "paid"


def test_assigning_to_another_creditors_debtor_is_refused(db, clock, debtors, make_creditor, make_debtor):
    other = make_debtor(make_creditor(slug="otro", name="Otro"), external_ref="X-1", phone="+56 9 6123 4599")
    run(db, clock, EXAMPLE.read_bytes())

    with db.session() as session, pytest.raises(ReconcileError, match="no such debtor"):
        assign_line(session, lines_by_no(db)[10].id, other.id, resolver(clock))


def test_ignoring_a_line_takes_it_out_of_the_queue_without_money(db, clock, debtors):
    run(db, clock, EXAMPLE.read_bytes())
    line_id = lines_by_no(db)[13].id

    with db.session() as session:
        ignore_line(session, line_id, resolver(clock))
        session.commit()
    with db.session() as session, pytest.raises(ReconcileError):
        ignore_line(session, line_id, resolver(clock))

    assert lines_by_no(db)[13].status == "ignored"
    assert count(db, Payment) == 2


def test_received_at_is_the_booking_day(db, clock, debtors):
    run(db, clock, EXAMPLE.read_bytes())

    with db.session() as session:
        received = session.scalars(select(Payment.received_at).order_by(Payment.id)).first()
    assert received is not None and received.date() == date(2026, 11, 2)
    assert isinstance(received, datetime)


def test_an_installment_amount_pays_that_installment(db, clock, creditor, make_debtor):
    debtor = make_debtor(creditor, invoices=[{"number": "F-9", "amount": "30000", "due_date": date(2026, 11, 1)}])
    with db.session() as session:
        plan = PaymentPlan(debtor_id=debtor.id, status="active", currency="CLP", total_minor=30000, installment_count=3)
        plan.installments = [
            Installment(seq=seq, due_date=date(2026, 12, 1) + timedelta(days=30 * seq), amount_minor=10000)
            for seq in range(3)
        ]
        session.add(plan)
        session.commit()

    report = run(db, clock, (HEADER + "05/11/2026;;DEPOSITO;;10.000;0\n").encode())

    assert report.matched == 1  # 10.000 is no invoice's balance, but it is this debtor's next installment
    with db.session() as session:
        paid = session.scalars(select(Installment).where(Installment.status == "paid")).all()
        allocation = session.scalars(select(PaymentAllocation)).one()
    assert len(paid) == 1 and allocation.installment_id == paid[0].id
