"""The Flask admin console for agents and managers: `register(app)` adds it to the app under /admin."""

from __future__ import annotations

from flask import Blueprint, Flask, redirect, url_for
from werkzeug.wrappers import Response

from admin import (
    agents_admin,
    auth,
    cases,
    dashboard,
    debtors,
    flows,
    i18n,
    inbox,
    policy_editor,
    reconciliation,
    template_editor,
)


def register(app: Flask) -> None:
    """Sign-in (Flask-Login), CSRF for console forms only, and the console's pages, static files and templates."""
    console = Blueprint(
        "admin",
        __name__,
        url_prefix="/admin",
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    console.before_request(auth.guard)
    console.add_url_rule("/", "home", _home)
    console.register_blueprint(auth.blueprint)
    console.register_blueprint(inbox.blueprint)
    console.register_blueprint(cases.blueprint)
    console.register_blueprint(debtors.blueprint)
    console.register_blueprint(flows.blueprint)
    console.register_blueprint(template_editor.blueprint)
    console.register_blueprint(policy_editor.blueprint)
    console.register_blueprint(reconciliation.blueprint)
    console.register_blueprint(agents_admin.blueprint)
    console.register_blueprint(dashboard.blueprint)
    console.register_blueprint(i18n.blueprint)
    console.context_processor(i18n.template_globals)  # `_()` and the console language in every console page
    auth.init_login(app)
    app.register_blueprint(console)


def _home() -> Response:
    return redirect(url_for("admin.inbox.inbox"))
