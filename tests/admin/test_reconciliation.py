"""The reconciliation console: sign-in and roles, upload (a bad file is refused and saves nothing), the batch
summary, and the queue actions (confirm once, assign, ignore) with CSRF."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bot.models import AuditEvent, Creditor, Debtor, ImportBatch, Payment, StatementLine
from bot.payments.reconcile import _Reconciler
from bot.store import Database
from tests.admin import csrf_token

EXAMPLE = Path(__file__).parents[2] / "examples" / "statement_bancoestado.csv"
PEOPLE = [("C-1001", "Ana María Pérez", 45990), ("C-1002", "Jorge Muñoz", 10000), ("C-1003", "Camila Rojas", 30000)]


@pytest.fixture
def debtors(make_creditor: Callable[..., Creditor], make_debtor: Callable[..., Debtor]) -> dict[str, Debtor]:
    creditor = make_creditor(slug="aguas")
    made = {}
    for index, (ref, name, balance) in enumerate(PEOPLE):
        made[ref] = make_debtor(
            creditor,
            external_ref=ref,
            name=name,
            phone=f"+56 9 6123 45{index:02d}",
            email=f"{ref.lower()}@example.cl",
            invoices=[{"number": ref.replace("C", "F"), "amount": str(balance), "due_date": date(2026, 12, 5)}],
        )
    return made


@pytest.fixture
def web(agent: FlaskClient) -> FlaskClient:
    return agent


def upload(client: FlaskClient, data: bytes, name: str = "cartola.csv", creditor: str = "aguas"):
    return client.post(
        "/admin/reconciliation/upload",
        data={
            "csrf_token": csrf_token(client, "/admin/reconciliation"),
            "format": "bancoestado",
            "creditor": creditor,
            "statement": (io.BytesIO(data), name),
        },
        content_type="multipart/form-data",
    )


def count(db: Database, model: type) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def line_id(db: Database, line_no: int) -> int:
    with db.session() as session:
        return session.scalars(select(StatementLine.id).where(StatementLine.line_no == line_no)).one()


def test_signed_out_visitor_is_sent_to_sign_in(console):
    response = console.test_client().get("/admin/reconciliation")

    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]


def test_upload_shows_the_batch_summary_and_fills_the_queue(boss, db, debtors):
    response = upload(boss, EXAMPLE.read_bytes())

    assert response.status_code == 303
    page = boss.get(response.headers["Location"]).get_data(as_text=True)
    assert "Statement imported: 2 matched, 1 suggested, 3 unmatched, 1 line errors." in page
    assert "<tr><th>Skipped debits</th><td>2</td></tr>" in page
    assert "line 15: Abonos" in page
    queue = boss.get("/admin/reconciliation").get_data(as_text=True)
    assert "CAMILA ROJS" in queue and "Camila Rojas" in queue and "Confirm" in queue
    assert "JORGE MUNOZ" not in queue  # matched lines are not in the queue


def test_a_bad_file_is_refused_with_a_reason_and_saves_nothing(boss, db, debtors):
    response = upload(boss, b"PK\x03\x04\x00\x00 not a csv", name="cartola.xlsx")

    assert response.status_code == 400
    assert "Statement not imported: the file is not a CSV text file" in response.get_data(as_text=True)
    assert (count(db, ImportBatch), count(db, StatementLine), count(db, Payment)) == (0, 0, 0)


def test_unknown_creditor_and_missing_file_are_refused(boss, db, debtors):
    assert "no creditor with slug" in upload(boss, EXAMPLE.read_bytes(), creditor="nadie").get_data(as_text=True)
    response = boss.post(
        "/admin/reconciliation/upload",
        data={"csrf_token": csrf_token(boss, "/admin/reconciliation"), "format": "bancoestado", "creditor": "aguas"},
    )
    assert response.status_code == 400 and "Choose a statement file" in response.get_data(as_text=True)
    assert count(db, ImportBatch) == 0


def test_the_same_file_twice_changes_nothing(boss, db, debtors):
    upload(boss, EXAMPLE.read_bytes())
    response = upload(boss, EXAMPLE.read_bytes(), name="copy.csv")

    assert "This file was imported before; nothing changed." in boss.get(response.headers["Location"]).get_data(
        as_text=True
    )
    assert (count(db, ImportBatch), count(db, StatementLine), count(db, Payment)) == (1, 6, 2)


def test_agents_cannot_upload_without_csrf_or_role(web, console, db, debtors):
    assert upload(web, EXAMPLE.read_bytes()).status_code == 403
    anonymous_post = web.post("/admin/reconciliation/upload", data={"format": "bancoestado"})
    assert anonymous_post.status_code == 400  # no CSRF token
    assert count(db, ImportBatch) == 0


def test_an_agent_confirms_a_suggestion_once(boss, web, db, debtors):
    upload(boss, EXAMPLE.read_bytes())
    suggested = line_id(db, 12)
    token = csrf_token(web, "/admin/reconciliation")

    first = web.post(f"/admin/reconciliation/lines/{suggested}/confirm", data={"csrf_token": token})
    second = web.post(f"/admin/reconciliation/lines/{suggested}/confirm", data={"csrf_token": token})

    assert first.status_code == second.status_code == 303
    assert "this line is already confirmed" in web.get(second.headers["Location"]).get_data(as_text=True)
    with db.session() as session:
        line = session.get_one(StatementLine, suggested)
        payments = session.scalar(select(func.count()).where(Payment.provider_payment_id == line.fingerprint))
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "statement_line.confirmed")).one()
    assert (line.status, payments, audit.actor) == ("confirmed", 1, f"agent:{line.resolved_by_id}")


def test_assign_by_debtor_reference_and_ignore(boss, web, db, debtors):
    upload(boss, EXAMPLE.read_bytes())
    token = csrf_token(web, "/admin/reconciliation")
    deposit, stranger = line_id(db, 10), line_id(db, 13)

    wrong = web.post(f"/admin/reconciliation/lines/{deposit}/assign", data={"csrf_token": token, "debtor_ref": "Z"})
    assert "No debtor with reference &#39;Z&#39;" in web.get(wrong.headers["Location"]).get_data(as_text=True)
    web.post(f"/admin/reconciliation/lines/{deposit}/assign", data={"csrf_token": token, "debtor_ref": "C-1003"})
    web.post(f"/admin/reconciliation/lines/{stranger}/ignore", data={"csrf_token": token})

    with db.session() as session:
        assert session.get_one(StatementLine, deposit).status == "confirmed"
        assert session.get_one(StatementLine, deposit).debtor_id == debtors["C-1003"].id
        assert session.get_one(StatementLine, stranger).status == "ignored"
        assert session.scalar(select(func.count()).select_from(Payment)) == 3


def test_unknown_line_is_404(web):
    token = csrf_token(web, "/admin/reconciliation")

    assert web.post("/admin/reconciliation/lines/999/ignore", data={"csrf_token": token}).status_code == 404
    assert web.get("/admin/reconciliation/batches/999").status_code == 404


def test_a_statement_overlapping_a_concurrent_import_is_refused_not_a_500(boss, db, debtors, monkeypatch):
    def lines_taken_by_a_concurrent_import(*_args: object) -> None:
        raise IntegrityError("INSERT INTO statement_lines ...", {}, Exception("duplicate key value (fingerprint)"))

    monkeypatch.setattr(_Reconciler, "run", lines_taken_by_a_concurrent_import)
    response = upload(boss, EXAMPLE.read_bytes())

    assert response.status_code == 400
    assert "imported at the same moment" in response.get_data(as_text=True)
    assert (count(db, ImportBatch), count(db, StatementLine), count(db, Payment)) == (0, 0, 0)
