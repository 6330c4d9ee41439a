"""The templates editor (manager+): every key with its es/en default and overrides, edit per key, locale and
channel with a preview and a placeholder check, reset to default. Logic in admin/template_overrides.py."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from admin import template_overrides as to
from admin.auth import current_actor, require_role
from admin.services import ConsoleError, NotFound
from bot.services import Services
from bot.templates import ANY_CHANNEL

blueprint = Blueprint("templates", __name__)


def services() -> Services:
    return current_app.extensions["cobrabot"]


@blueprint.get("/templates")
@require_role("manager")
def templates() -> ResponseReturnValue:
    with services().database.session() as session:
        return render_template("admin/templates.html", rows=to.rows(session))


@blueprint.get("/templates/<key>")
@require_role("manager")
def edit(key: str) -> ResponseReturnValue:
    locale, channel = request.args.get("locale", "es"), request.args.get("channel", ANY_CHANNEL)
    with services().database.session() as session:
        _target(key, locale, channel)
        row = to.override(session, key, locale, channel)
        body = row.body if row else to.default_body(key, locale, channel)
        return _page(session, key, locale, channel, body)


@blueprint.post("/templates/<key>")
@require_role("manager")
def save(key: str) -> ResponseReturnValue:
    locale, channel = request.form.get("locale", ""), request.form.get("channel", "")
    body = request.form.get("body", "")
    with services().database.session() as session:
        _target(key, locale, channel)
        try:
            if request.form.get("action") == "preview":
                to.check_body(session, key, body)
                return _page(session, key, locale, channel, body, preview=to.preview(key, body, locale, channel))
            version = to.save(session, key, locale, channel, body, current_actor()).version
        except ConsoleError as exc:
            session.rollback()
            flash(str(exc), "error")
            return _page(session, key, locale, channel, body), 422
        session.commit()
    flash(f"Saved {key} ({locale}, {channel}) as version {version}.", "info")
    return redirect(url_for(".edit", key=key, locale=locale, channel=channel), code=303)


@blueprint.post("/templates/<key>/reset")
@require_role("manager")
def reset(key: str) -> ResponseReturnValue:
    locale, channel = request.form.get("locale", ""), request.form.get("channel", "")
    with services().database.session() as session:
        _target(key, locale, channel)
        try:
            to.reset(session, key, locale, channel, current_actor())
        except ConsoleError as exc:
            flash(str(exc), "error")
            return redirect(url_for(".edit", key=key, locale=locale, channel=channel), code=303)
        session.commit()
    flash(f"{key} ({locale}, {channel}) is back to the default.", "info")
    return redirect(url_for(".edit", key=key, locale=locale, channel=channel), code=303)


def _target(key: str, locale: str, channel: str) -> None:
    try:
        to.check_target(key, locale, channel)
    except NotFound:
        abort(404)
    except ConsoleError as exc:
        abort(400, description=str(exc))


def _page(session: Session, key: str, locale: str, channel: str, body: str, preview: str | None = None) -> str:
    if preview is None:
        try:
            preview = to.preview(key, body, locale, channel)
        except ConsoleError as exc:
            preview = str(exc)
    return render_template(
        "admin/template_edit.html",
        key=key,
        locale=locale,
        channel=channel,
        body=body,
        default=to.default_body(key, locale, channel),
        override=to.override(session, key, locale, channel),
        allowed=sorted(to.allowed_placeholders(key)),
        public=key in to.public_keys(session),
        preview=preview,
        locales=to.LOCALES,
        channels=to.CHANNELS,
    )
