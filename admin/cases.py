"""The case queue and the case page: evidence, take, reassign (managers), uphold (adjust or write off), reject."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, abort, current_app, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.auth import current_actor, require_role
from admin.case_services import (
    CASE_KINDS,
    CASE_STATUSES,
    CaseDesk,
    attachments,
    evidence,
    list_cases,
    sla_state,
)
from admin.responses import run_action
from admin.services import agents, message_json
from bot.models import Agent, AuditEvent, Case, Debtor, Invoice
from bot.services import Services

blueprint = Blueprint("cases", __name__)


def services() -> Services:
    return current_app.extensions["cobrabot"]


def desk() -> CaseDesk:
    svc = services()
    return CaseDesk(svc.database, svc.locks, svc.clock, svc.portal)


@blueprint.get("/cases")
def cases() -> ResponseReturnValue:
    status = request.args.get("status", "open")
    kind = request.args.get("kind", "")
    svc = services()
    now = svc.clock()
    with svc.database.session() as session:
        rows = list_cases(session, status if status in CASE_STATUSES else None, kind if kind in CASE_KINDS else None)
        names = dict(
            session.execute(select(Debtor.id, Debtor.name).where(Debtor.id.in_({c.debtor_id for c in rows}))).all()
        )
        assignees = _agent_names(session)
        return render_template(
            "admin/cases.html",
            rows=[(case, sla_state(case, now)) for case in rows],
            names=names,
            assignees=assignees,
            status=status,
            kind=kind,
            statuses=CASE_STATUSES,
            kinds=CASE_KINDS,
        )


@blueprint.get("/cases/<int:case_id>")
def case(case_id: int) -> ResponseReturnValue:
    svc = services()
    with svc.database.session() as session:
        found = session.get(Case, case_id)
        if found is None:
            abort(404)
        messages = evidence(session, found)
        history = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.subject_type == "case", AuditEvent.subject_id == str(case_id))
            .order_by(AuditEvent.id)
        )
        invoices = session.scalars(
            select(Invoice).where(Invoice.debtor_id == found.debtor_id).order_by(Invoice.due_date)
        )
        return render_template(
            "admin/case.html",
            case=found,
            sla=sla_state(found, svc.clock()),
            debtor=session.get_one(Debtor, found.debtor_id),
            invoices=list(invoices),
            messages=[message_json(message) for message in messages],
            attachments=attachments(messages),
            history=list(history),
            assignees=_agent_names(session),
            agents=agents(session) if current_user.at_least("manager") else [],
        )


def _agent_names(session: Session) -> dict[int, str]:
    rows = session.execute(select(Agent.id, Agent.name, Agent.email)).all()
    return {agent_id: name or email for agent_id, name, email in rows}


def _act(case_id: int, action: Callable[[CaseDesk], object], done: str) -> ResponseReturnValue:
    page = url_for("admin.cases.case", case_id=case_id)
    return run_action(page, lambda: action(desk()), done)


@blueprint.post("/cases/<int:case_id>/take")
def take(case_id: int) -> ResponseReturnValue:
    return _act(case_id, lambda d: d.take(case_id, current_actor()), "The case is yours.")


@blueprint.post("/cases/<int:case_id>/assign")
@require_role("manager")
def assign(case_id: int) -> ResponseReturnValue:
    agent_id = _optional_id("agent_id")
    return _act(case_id, lambda d: d.assign(case_id, current_actor(), agent_id), "Assignment saved.")


@blueprint.post("/cases/<int:case_id>/uphold")
def uphold(case_id: int) -> ResponseReturnValue:
    remedy, invoice_id, balance = (
        request.form.get("remedy", ""),
        _optional_id("invoice_id"),
        request.form.get("new_balance", ""),
    )
    done = "Upheld: the balance was adjusted." if remedy == "adjust" else "Upheld: the debt was written off."
    return _act(case_id, lambda d: d.uphold(case_id, current_actor(), remedy, invoice_id, balance), done)


@blueprint.post("/cases/<int:case_id>/reject")
def reject(case_id: int) -> ResponseReturnValue:
    done = "Rejected: disputed invoices are collected again."
    return _act(case_id, lambda d: d.reject(case_id, current_actor()), done)


def _optional_id(field: str) -> int | None:
    raw = request.form.get(field, "")
    if raw and not raw.isdigit():
        abort(400)
    return int(raw) if raw else None
