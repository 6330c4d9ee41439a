"""Negotiation policy and reminder cadence forms per creditor (manager+). Logic in admin/policy_forms.py."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from admin import policy_forms as pf
from admin.auth import current_actor, require_role
from admin.services import NotFound
from bot.campaigns import ALL_CHANNELS
from bot.models import Creditor
from bot.services import Services
from bot.templates import default_templates

blueprint = Blueprint("policies", __name__)


def services() -> Services:
    return current_app.extensions["cobrabot"]


@blueprint.get("/creditors")
@require_role("manager")
def creditors() -> ResponseReturnValue:
    with services().database.session() as session:
        rows = [(row, pf.cadences(session, row.id)) for row in pf.creditors(session)]
        return render_template("admin/creditors.html", rows=rows)


@blueprint.route("/creditors/<int:creditor_id>/policy", methods=["GET", "POST"])
@require_role("manager")
def policy(creditor_id: int) -> ResponseReturnValue:
    with services().database.session() as session:
        row = _creditor(session, creditor_id)
        if request.method == "GET":
            return _policy_page(row, pf.policy_form(pf.current_policy(row)), [])
        try:
            pf.save_policy(session, creditor_id, request.form, current_actor())
        except pf.FormErrors as exc:
            session.rollback()
            return _policy_page(row, dict(request.form), exc.errors), 422
        session.commit()
    flash("Negotiation policy saved.", "info")
    return redirect(url_for(".policy", creditor_id=creditor_id), code=303)


@blueprint.route("/creditors/<int:creditor_id>/cadences/<segment>", methods=["GET", "POST"])
@require_role("manager")
def cadence(creditor_id: int, segment: str) -> ResponseReturnValue:
    with services().database.session() as session:
        row = _creditor(session, creditor_id)
        if request.method == "GET":
            existing = pf.cadence(session, creditor_id, segment)
            return _cadence_page(row, segment, pf.step_rows(pf.current_spec(existing)), [], existing is not None)
        rows = pf.submitted_rows(request.form, request.form.getlist)
        try:
            pf.save_cadence(session, creditor_id, segment, rows, current_actor())
        except pf.FormErrors as exc:
            session.rollback()
            return _cadence_page(row, segment, [*rows, pf.StepRow()], exc.errors, False), 422
        session.commit()
    flash(f"Cadence {segment!r} saved.", "info")
    return redirect(url_for(".cadence", creditor_id=creditor_id, segment=segment), code=303)


@blueprint.post("/creditors/<int:creditor_id>/cadences")
@require_role("manager")
def new_cadence(creditor_id: int) -> ResponseReturnValue:
    segment = request.form.get("segment", "").strip()
    if not pf.SEGMENT.match(segment):
        flash("Segment: 1 to 32 lowercase letters, digits or _.", "error")
        return redirect(url_for(".creditors"), code=303)
    return redirect(url_for(".cadence", creditor_id=creditor_id, segment=segment), code=303)


def _creditor(session: Any, creditor_id: int) -> Creditor:
    try:
        return pf.creditor(session, creditor_id)
    except NotFound:
        abort(404)


def _policy_page(row: Creditor, values: dict[str, str], errors: list[str]) -> str:
    return render_template(
        "admin/policy.html",
        creditor=row,
        values=values,
        errors=errors,
        fields=pf.POLICY_FIELDS,
        hardship_fields=pf.HARDSHIP_FIELDS,
    )


def _cadence_page(row: Creditor, segment: str, steps: list[pf.StepRow], errors: list[str], saved: bool) -> str:
    return render_template(
        "admin/cadence.html",
        creditor=row,
        segment=segment,
        steps=steps,
        errors=errors,
        saved=saved,
        channels=ALL_CHANNELS,
        template_keys=sorted(default_templates("es")),
    )
