"""Debtor 360: search, the whole account on one page, and the account actions (payment link, pause, opt-out)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from flask import Blueprint, abort, current_app, render_template, request, url_for
from flask.typing import ResponseReturnValue

from admin.auth import current_actor
from admin.case_services import OPT_OUT_CHANNELS, CaseDesk, debtor_view, search_debtors, sla_state
from admin.responses import run_action
from admin.services import message_json
from bot.domain import Money
from bot.i18n import format_date, format_money
from bot.services import Services

blueprint = Blueprint("debtors", __name__)


def services() -> Services:
    return current_app.extensions["cobrabot"]


def desk() -> CaseDesk:
    svc = services()
    return CaseDesk(svc.database, svc.locks, svc.clock, svc.portal)


@blueprint.get("/debtors")
def search() -> ResponseReturnValue:
    query = request.args.get("q", "")
    with services().database.session() as session:
        return render_template("admin/debtor.html", view=None, q=query, rows=search_debtors(session, query))


@blueprint.get("/debtors/<int:debtor_id>")
def debtor(debtor_id: int) -> ResponseReturnValue:
    svc = services()
    now = svc.clock()
    with svc.database.session() as session:
        view = debtor_view(session, debtor_id)
        if view is None:
            abort(404)
        locale = view.debtor.locale

        def money(minor: int, currency: str) -> str:
            return format_money(Money(minor, currency), locale)

        return render_template(
            "admin/debtor.html",
            view=view,
            q="",
            d=view.debtor,
            money=money,
            day=lambda value: format_date(value, locale, "medium"),
            messages=[message_json(message) | {"channel": message.channel} for message in view.messages],
            case_sla={case.id: sla_state(case, now) for case in view.cases},
            channels=OPT_OUT_CHANNELS,
            paused=view.debtor.collection_paused_until is not None and view.debtor.collection_paused_until > now,
        )


def _act(debtor_id: int, action: Callable[[CaseDesk], object], done: str) -> ResponseReturnValue:
    page = url_for("admin.debtors.debtor", debtor_id=debtor_id)
    return run_action(page, lambda: action(desk()), done)


@blueprint.post("/debtors/<int:debtor_id>/payment-link")
def payment_link(debtor_id: int) -> ResponseReturnValue:
    done = "Payment link for the whole balance queued to the debtor."
    return _act(debtor_id, lambda d: d.send_payment_link(debtor_id, current_actor()), done)


@blueprint.post("/debtors/<int:debtor_id>/pause")
def pause(debtor_id: int) -> ResponseReturnValue:
    try:
        until = date.fromisoformat(request.form.get("until", ""))
    except ValueError:
        abort(400)
    done = f"Collection paused until {until.isoformat()}."
    return _act(debtor_id, lambda d: d.pause_collection(debtor_id, current_actor(), until), done)


@blueprint.post("/debtors/<int:debtor_id>/opt-out")
def opt_out(debtor_id: int) -> ResponseReturnValue:
    channel = request.form.get("channel", "")
    return _act(debtor_id, lambda d: d.record_opt_out(debtor_id, current_actor(), channel), "Opt-out recorded.")
