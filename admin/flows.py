"""The flow editor (manager+): versions, YAML editing with live validation, publish, roll back, diff, diagram,
and a simulator that runs a version against a made-up debtor. The logic lives in admin/flow_versions.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from admin import flow_versions as fv
from admin.auth import current_actor, require_role
from admin.responses import run_action
from admin.services import Actor, ConsoleError, NotFound
from bot.models import FlowVersion
from bot.services import Services
from flows.loader import FlowError, parse_flow

blueprint = Blueprint("flows", __name__)
LOCALES = ("es", "en")
PublishStep = Callable[[Session, str, int, Actor, datetime], FlowVersion]


def services() -> Services:
    return current_app.extensions["cobrabot"]


@blueprint.get("/flows")
@require_role("manager")
def flows() -> ResponseReturnValue:
    names = fv.flow_names()
    return render_template("admin/flows.html", names=names)


@blueprint.get("/flows/<name>")
@require_role("manager")
def editor(name: str) -> ResponseReturnValue:
    _known(name)
    shown = request.args.get("version", type=int)
    with services().database.session() as session:
        try:
            source = None if shown is None else fv.source_of(session, name, shown)
        except NotFound:
            abort(404)
        return _editor_page(session, name, shown, source)


def _editor_page(session: Session, name: str, shown: int | None, source: str | None) -> str:
    rows = fv.versions(session, name)
    if shown is None:
        shown = rows[0].version if rows else fv.SHIPPED
    if source is None:
        source = fv.source_of(session, name, shown)
    return render_template(
        "admin/flow_editor.html",
        name=name,
        rows=rows,
        shown=shown,
        source=source,
        in_force=fv.published_source(session, name)[0],
        problems=fv.problems(name, source),
        locales=LOCALES,
    )


@blueprint.post("/flows/validate")
@require_role("manager")
def validate() -> ResponseReturnValue:
    payload = request.get_json(silent=True) or {}
    source, name = payload.get("source"), payload.get("name", "collections")
    if not isinstance(source, str) or not isinstance(name, str) or len(source) > fv.MAX_SOURCE_CHARS:
        return jsonify(error="bad_request", message=f"send {{source, name}}; at most {fv.MAX_SOURCE_CHARS} chars"), 400
    found = fv.problems(_known(name), source)
    return jsonify(valid=not found, problems=fv.problems_json(found))


@blueprint.post("/flows/<name>/drafts")
@require_role("manager")
def save_draft(name: str) -> ResponseReturnValue:
    _known(name)
    source = request.form.get("source", "")
    with services().database.session() as session:
        try:
            version = fv.save_draft(session, name, source, current_actor()).version
        except ConsoleError as exc:
            # Shown on the editor with the text as typed: a refused save must not lose the manager's work.
            flash(str(exc), "error")
            return _editor_page(session, name, None, source), 422
        session.commit()
    flash(f"Draft v{version} saved.", "info")
    return redirect(url_for(".editor", name=name, version=version), code=303)


@blueprint.post("/flows/<name>/<int:version>/publish")
@require_role("manager")
def publish(name: str, version: int) -> ResponseReturnValue:
    return _publishing(name, version, fv.publish, f"Version {version} published.")


@blueprint.post("/flows/<name>/<int:version>/rollback")
@require_role("manager")
def rollback(name: str, version: int) -> ResponseReturnValue:
    return _publishing(name, version, fv.rollback, f"Version {version} published again as a new version.")


def _publishing(name: str, version: int, step: PublishStep, done: str) -> ResponseReturnValue:
    _known(name)
    svc = services()

    def act() -> None:
        with svc.database.session() as session:
            step(session, name, version, current_actor(), svc.clock())
            session.commit()
        fv.published_changed()

    return run_action(url_for(".editor", name=name, version=version), act, done)


@blueprint.get("/flows/<name>/<int:version>/diff")
@require_role("manager")
def diff(name: str, version: int) -> ResponseReturnValue:
    _known(name)
    with services().database.session() as session:
        try:
            table = fv.diff_table(session, name, version)
        except NotFound:
            abort(404)
    return render_template("admin/flow_diff.html", name=name, version=version, table=table)


@blueprint.get("/flows/<name>/<int:version>/graph.json")
@require_role("manager")
def graph(name: str, version: int) -> ResponseReturnValue:
    _known(name)
    with services().database.session() as session:
        try:
            source = fv.source_of(session, name, version)
        except NotFound:
            return jsonify(error="not_found", message=f"{name} has no version {version}"), 404
    try:
        return jsonify(fv.graph(source))
    except ConsoleError as exc:
        return jsonify(error="unparseable", message=str(exc)), 422


@blueprint.post("/flows/<name>/<int:version>/simulate")
@require_role("manager")
def simulate(name: str, version: int) -> ResponseReturnValue:
    _known(name)
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict) or not isinstance(payload.get("message"), str):
        return jsonify(error="bad_request", message="send {message, state, locale}"), 400
    locale = payload.get("locale", "es")
    if locale not in LOCALES:
        return jsonify(error="bad_request", message=f"locale must be one of {', '.join(LOCALES)}"), 400
    svc = services()
    with svc.database.session() as session:
        try:
            flow = parse_flow(fv.source_of(session, name, version))
            turn = fv.simulate(
                session, flow, svc.conversations.engine.nlu, payload["message"], payload.get("state"), locale,
                svc.clock(),
            )  # fmt: skip
        except NotFound:
            return jsonify(error="not_found", message=f"{name} has no version {version}"), 404
        except (FlowError, ConsoleError) as exc:
            return jsonify(error="refused", message=str(exc)), 422
        session.rollback()  # the simulator reads only; make sure nothing it touched is ever kept
    return jsonify(turn)


def _known(name: str) -> str:
    try:
        return fv.known_name(name)
    except NotFound:
        abort(404)
