"""The case queue and case page: SLA state, evidence, take/reassign, uphold (adjust, write off), reject, CSRF."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bot.models import AuditEvent, Case, Debtor, Invoice, Message
from bot.store import Database
from tests.admin import add_agent, csrf_token, handed_off, sign_in
from tests.conftest import FixedClock

INVOICES = [
    {"number": "F-1", "amount": "45990", "due_date": "2026-12-05"},
    {"number": "F-2", "amount": "10000", "due_date": "2026-12-20"},
]


@pytest.fixture
def agent_id(db: Database) -> int:
    return add_agent(db, "ana@cobrabot.example")


@pytest.fixture
def manager_id(db: Database) -> int:
    return add_agent(db, "marta@cobrabot.example", role="manager")


def _client(console: Flask, email: str) -> FlaskClient:
    client = console.test_client()
    assert sign_in(client, email).status_code == 302
    return client


@pytest.fixture
def web(console: Flask, agent_id: int) -> FlaskClient:
    return _client(console, "ana@cobrabot.example")


@pytest.fixture
def boss(console: Flask, manager_id: int) -> FlaskClient:
    return _client(console, "marta@cobrabot.example")


@pytest.fixture
def debtor(make_debtor: Callable[..., Debtor]) -> Debtor:
    return make_debtor(invoices=INVOICES)


def open_dispute(db: Database, debtor: Debtor, clock: FixedClock, sla_hours: float = 72) -> int:
    """A dispute as the bot opens one: a conversation with evidence, the debtor's invoices frozen as disputed."""
    conversation_id = handed_off(db, debtor, clock())
    with db.session() as session:
        session.add(
            Message(
                conversation_id=conversation_id,
                debtor_id=debtor.id,
                direction="in",
                channel="sms",
                body="ya pagué, adjunto comprobante",
                media=["https://media.example/receipt.jpg", "javascript:alert(1)"],
                created_at=clock(),
            )
        )
        for invoice in session.scalars(select(Invoice).where(Invoice.debtor_id == debtor.id)):
            invoice.status = "disputed"
        case = Case(
            debtor_id=debtor.id,
            conversation_id=conversation_id,
            kind="dispute",
            reason="no reconozco la deuda",
            sla_due_at=clock() + timedelta(hours=sla_hours),
        )
        session.add(case)
        session.commit()
        return case.id


def _post(client: FlaskClient, path: str, **form: object) -> int:
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/cases"), **form}).status_code


def _case(db: Database, case_id: int) -> Case:
    with db.session() as session:
        return session.get_one(Case, case_id)


def _invoices(db: Database, debtor_id: int) -> dict[str, tuple[str, int]]:
    with db.session() as session:
        rows = session.scalars(select(Invoice).where(Invoice.debtor_id == debtor_id))
        return {invoice.number: (invoice.status, invoice.balance_minor) for invoice in rows}


def _audit(db: Database, action: str) -> list[AuditEvent]:
    with db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def test_case_list_filters_and_shows_sla_state(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    late = open_dispute(db, debtor, clock, sla_hours=-1)
    soon = open_dispute(db, debtor, clock, sla_hours=5)
    with db.session() as session:
        session.add(Case(debtor_id=debtor.id, kind="hardship", reason="perdí mi trabajo", status="resolved"))
        session.commit()

    page = web.get("/admin/cases").get_data(as_text=True)
    assert f"/admin/cases/{late}" in page and f"/admin/cases/{soon}" in page
    assert "overdue" in page and "due soon" in page and "hardship" not in page.split("<tbody>")[1]
    assert page.index(f"/admin/cases/{late}") < page.index(f"/admin/cases/{soon}")  # most urgent first

    hardship = web.get("/admin/cases?status=all&kind=hardship").get_data(as_text=True).split("<tbody>")[1]
    assert "hardship" in hardship and "dispute" not in hardship
    assert web.get("/admin/cases?status=resolved&kind=dispute").get_data(as_text=True).count("/admin/cases/") == 0


@pytest.mark.parametrize("role", ["agent", "manager", "admin"])
def test_case_page_shows_debtor_reason_and_evidence_for_every_role(
    console: Flask, db: Database, clock: FixedClock, debtor: Debtor, role: str
) -> None:
    case_id = open_dispute(db, debtor, clock)
    add_agent(db, f"{role}@cobrabot.example", role=role)
    page = _client(console, f"{role}@cobrabot.example").get(f"/admin/cases/{case_id}").get_data(as_text=True)
    assert "Ana María Pérez" in page and "no reconozco la deuda" in page
    assert "ya pagué, adjunto comprobante" in page and "quiero hablar con una persona" in page
    assert page.count('href="https://media.example/receipt.jpg"') == 2  # in the thread and in the attachments
    assert "javascript:alert" not in page
    assert ('name="agent_id"' in page) is (role != "agent")  # only managers see the reassign form


def test_unknown_case_is_404(web: FlaskClient) -> None:
    assert web.get("/admin/cases/999999").status_code == 404
    assert _post(web, "/admin/cases/999999/take") == 404
    assert _post(web, "/admin/cases/999999/reject") == 404


def test_take_assigns_to_me_and_another_agent_cannot_take_it(
    web: FlaskClient, console: Flask, db: Database, clock: FixedClock, debtor: Debtor, agent_id: int
) -> None:
    case_id = open_dispute(db, debtor, clock)
    assert _post(web, f"/admin/cases/{case_id}/take") == 303
    assert _case(db, case_id).assignee_id == agent_id
    [event] = _audit(db, "case.taken")
    assert event.actor == f"agent:{agent_id}" and event.subject_type == "case" and event.subject_id == str(case_id)

    add_agent(db, "bea@cobrabot.example")
    other = _client(console, "bea@cobrabot.example")
    assert _post(other, f"/admin/cases/{case_id}/take") == 403
    assert _post(other, f"/admin/cases/{case_id}/reject") == 403
    assert _case(db, case_id).assignee_id == agent_id and _case(db, case_id).status == "open"


def test_only_managers_reassign(
    web: FlaskClient, boss: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor, agent_id: int
) -> None:
    case_id = open_dispute(db, debtor, clock)
    assert _post(web, f"/admin/cases/{case_id}/assign", agent_id=agent_id) == 403
    assert _case(db, case_id).assignee_id is None
    assert _post(boss, f"/admin/cases/{case_id}/assign", agent_id=agent_id) == 303
    assert _case(db, case_id).assignee_id == agent_id
    [event] = _audit(db, "case.assigned")
    assert event.data == {"agent_id": agent_id, "previous": None}
    assert _post(boss, f"/admin/cases/{case_id}/assign", agent_id="x") == 400


def test_upheld_with_adjustment_sets_the_new_balance_and_resumes_collection(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor, agent_id: int
) -> None:
    case_id = open_dispute(db, debtor, clock)
    with db.session() as session:
        f1 = session.scalars(select(Invoice.id).where(Invoice.number == "F-1")).one()
    assert _post(web, f"/admin/cases/{case_id}/uphold", remedy="adjust", invoice_id=f1, new_balance="20000") == 303

    assert _invoices(db, debtor.id) == {"F-1": ("open", 20000), "F-2": ("open", 10000)}
    case = _case(db, case_id)
    assert (case.status, case.outcome, case.resolved_at, case.assignee_id) == ("resolved", "upheld", clock(), agent_id)
    [resolved] = _audit(db, "case.resolved")
    assert resolved.actor == f"agent:{agent_id}" and resolved.data["remedy"] == "adjust"
    [adjusted] = _audit(db, "invoice.adjusted")
    assert adjusted.data["balance_before"] == 45990 and adjusted.data["balance_after"] == 20000


def test_adjustment_above_the_amount_is_refused_and_changes_nothing(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    case_id = open_dispute(db, debtor, clock)
    with db.session() as session:
        f1 = session.scalars(select(Invoice.id).where(Invoice.number == "F-1")).one()
    for bad in ("99999", "12.5", "abc"):
        assert _post(web, f"/admin/cases/{case_id}/uphold", remedy="adjust", invoice_id=f1, new_balance=bad) == 303
    assert _invoices(db, debtor.id) == {"F-1": ("disputed", 45990), "F-2": ("disputed", 10000)}
    assert _case(db, case_id).status == "open" and _audit(db, "case.resolved") == []


def test_upheld_write_off_zeroes_every_disputed_invoice(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    case_id = open_dispute(db, debtor, clock)
    assert _post(web, f"/admin/cases/{case_id}/uphold", remedy="write_off") == 303
    assert _invoices(db, debtor.id) == {"F-1": ("written_off", 0), "F-2": ("written_off", 0)}
    assert _case(db, case_id).outcome == "upheld"
    assert len(_audit(db, "invoice.written_off")) == 2
    assert _audit(db, "case.resolved")[0].data["invoices"] == {"F-1": "written_off", "F-2": "written_off"}


def test_rejected_puts_disputed_invoices_back_to_open(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    case_id = open_dispute(db, debtor, clock)
    assert _post(web, f"/admin/cases/{case_id}/reject") == 303
    assert _invoices(db, debtor.id) == {"F-1": ("open", 45990), "F-2": ("open", 10000)}
    case = _case(db, case_id)
    assert (case.status, case.outcome) == ("resolved", "rejected")
    assert _audit(db, "case.resolved")[0].data == {"outcome": "rejected", "invoices": {"F-1": "open", "F-2": "open"}}
    assert _post(web, f"/admin/cases/{case_id}/reject") == 303  # a second decision is refused, shown, not applied
    assert len(_audit(db, "case.resolved")) == 1


def test_rejecting_one_dispute_keeps_invoices_frozen_while_another_is_open(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    first = open_dispute(db, debtor, clock)
    open_dispute(db, debtor, clock)
    assert _post(web, f"/admin/cases/{first}/reject") == 303
    assert _invoices(db, debtor.id) == {"F-1": ("disputed", 45990), "F-2": ("disputed", 10000)}


def test_missing_csrf_token_is_400_and_changes_nothing(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    case_id = open_dispute(db, debtor, clock)
    assert web.post(f"/admin/cases/{case_id}/uphold", data={"remedy": "write_off"}).status_code == 400
    assert web.post(f"/admin/cases/{case_id}/take").status_code == 400
    assert _invoices(db, debtor.id) == {"F-1": ("disputed", 45990), "F-2": ("disputed", 10000)}
    case = _case(db, case_id)
    assert (case.status, case.assignee_id) == ("open", None)
    assert _audit(db, "case.taken") == [] and _audit(db, "case.resolved") == []


def test_signed_out_visitors_are_sent_to_sign_in(
    console: Flask, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    case_id = open_dispute(db, debtor, clock)
    response = console.test_client().get(f"/admin/cases/{case_id}")
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]
