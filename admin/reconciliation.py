"""Bank-statement reconciliation in the console: upload a statement (managers), see a batch's summary, and work
the queue of suggested and unmatched lines (confirm, assign to a debtor, ignore; any agent)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.auth import current_actor, require_role
from admin.responses import run_action
from admin.services import ConsoleError, NotFound
from bot.importer import UnknownCreditorError
from bot.models import Creditor, Debtor, ImportBatch, StatementLine
from bot.payments.reconcile import BATCH_KIND, QUEUE_STATUSES, ReconcileError, import_statement
from bot.payments.reconcile_queue import Resolver, assign_line, confirm_line, ignore_line
from bot.payments.statements import FORMATS, StatementFileError, statement_format
from bot.services import Services

blueprint = Blueprint("reconciliation", __name__)
MAX_UPLOAD_BYTES = 20 * 2**20
QUEUE_PAGE = 200


def services() -> Services:
    return current_app.extensions["cobrabot"]


@blueprint.get("/reconciliation")
def queue() -> ResponseReturnValue:
    status = request.args.get("status", "")
    return _queue_page(status if status in QUEUE_STATUSES else "")


def _queue_page(status: str, code: int = 200) -> ResponseReturnValue:
    statuses = (status,) if status else QUEUE_STATUSES
    with services().database.session() as session:
        lines = list(
            session.scalars(
                select(StatementLine)
                .where(StatementLine.status.in_(statuses))
                .order_by(StatementLine.booked_on, StatementLine.id)
                .limit(QUEUE_PAGE)
            )
        )
        batches = list(
            session.scalars(
                select(ImportBatch).where(ImportBatch.kind == BATCH_KIND).order_by(ImportBatch.id.desc()).limit(10)
            )
        )
        return (
            render_template(
                "admin/reconciliation.html",
                lines=lines,
                names=_debtor_names(session, lines),
                batches=batches,
                status=status,
                statuses=QUEUE_STATUSES,
                formats=sorted(FORMATS),
                creditors=list(session.execute(select(Creditor.slug, Creditor.name).order_by(Creditor.name))),
            ),
            code,
        )


@blueprint.post("/reconciliation/upload")
@require_role("manager")
def upload() -> ResponseReturnValue:
    problem, batch_id = _import_upload()
    if problem:
        flash(problem, "error")
        return _queue_page("", code=400)
    return redirect(url_for("admin.reconciliation.batch", batch_id=batch_id), code=303)


def _import_upload() -> tuple[str | None, int | None]:
    """Import the posted statement; (reason, None) when it was refused and nothing was saved."""
    upload = request.files.get("statement")
    if upload is None or not upload.filename:
        return "Choose a statement file to upload.", None
    data = upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        return f"The file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB.", None
    svc = services()
    try:
        fmt = statement_format(request.form.get("format", ""))
        report = import_statement(
            svc.database,
            data,
            upload.filename,
            fmt,
            request.form.get("creditor", ""),
            now=svc.clock(),
            actor=current_actor().name,
            settings=svc.settings,
        )
    except (StatementFileError, UnknownCreditorError) as exc:
        return f"Statement not imported: {exc}", None
    if report.already_imported:
        flash("This file was imported before; nothing changed.", "info")
    else:
        flash(
            f"Statement imported: {report.matched} matched, {report.suggested} suggested, "
            f"{report.unmatched} unmatched, {len(report.errors)} line errors.",
            "info",
        )
    return None, report.batch_id


@blueprint.get("/reconciliation/batches/<int:batch_id>")
def batch(batch_id: int) -> ResponseReturnValue:
    with services().database.session() as session:
        found = session.get(ImportBatch, batch_id)
        if found is None or found.kind != BATCH_KIND:
            abort(404)
        lines = list(
            session.scalars(select(StatementLine).where(StatementLine.batch_id == batch_id).order_by(StatementLine.id))
        )
        return render_template(
            "admin/reconciliation_batch.html", batch=found, lines=lines, names=_debtor_names(session, lines)
        )


def _debtor_names(session: Session, lines: list[StatementLine]) -> dict[int, str]:
    ids = {line.debtor_id for line in lines if line.debtor_id is not None}
    if not ids:
        return {}
    return dict(session.execute(select(Debtor.id, Debtor.name).where(Debtor.id.in_(ids))).all())


def _act(line_id: int, action: Callable[[Session, Resolver], object], done: str) -> ResponseReturnValue:
    page = request.form.get("next") or url_for("admin.reconciliation.queue")
    if not page.startswith("/admin/"):
        page = url_for("admin.reconciliation.queue")
    svc = services()

    def run() -> None:
        actor = current_actor()
        by = Resolver(agent_id=actor.id, actor=actor.name, now=svc.clock(), settings=svc.settings)
        with svc.database.session() as session:
            try:
                action(session, by)
            except LookupError as exc:
                raise NotFound(str(exc)) from None
            except ReconcileError as exc:
                raise ConsoleError(str(exc)) from None
            session.commit()

    return run_action(page, run, done)


@blueprint.post("/reconciliation/lines/<int:line_id>/confirm")
def confirm(line_id: int) -> ResponseReturnValue:
    return _act(line_id, lambda session, by: confirm_line(session, line_id, by), "Confirmed: the payment is recorded.")


@blueprint.post("/reconciliation/lines/<int:line_id>/assign")
def assign(line_id: int) -> ResponseReturnValue:
    ref = request.form.get("debtor_ref", "").strip()

    def action(session: Session, by: Resolver) -> None:
        line = session.get(StatementLine, line_id)
        if line is None:
            raise LookupError(f"no statement line {line_id}")
        debtor_id = session.scalar(
            select(Debtor.id).where(Debtor.creditor_id == line.creditor_id, Debtor.external_ref == ref)
        )
        if debtor_id is None:
            raise ReconcileError(f"No debtor with reference {ref!r} for this creditor.")
        assign_line(session, line_id, debtor_id, by)

    return _act(line_id, action, "Assigned: the payment is recorded.")


@blueprint.post("/reconciliation/lines/<int:line_id>/ignore")
def ignore(line_id: int) -> ResponseReturnValue:
    return _act(line_id, lambda session, by: ignore_line(session, line_id, by), "The line is ignored.")
