"""Console sign-in: Flask-Login sessions, the login form with lockout, roles, and the guard that makes every
console page require a signed-in agent and a CSRF token on every state-changing request."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFProtect

from admin.services import ROLE_RANK, Actor, authenticate
from bot.audit import record
from bot.models import Agent
from bot.services import Services

logger = logging.getLogger(__name__)
blueprint = Blueprint("auth", __name__)
PUBLIC_ENDPOINTS = frozenset({"admin.auth.login", "admin.static"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
F = TypeVar("F", bound=Callable[..., Any])

REFUSALS = {
    "invalid": "Wrong email or password.",
    "locked": "Too many failed attempts: this account is locked for 15 minutes.",
    "inactive": "This account is disabled. Ask an administrator.",
}


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """The signed-in agent as Flask-Login sees it: plain values, no open database session."""

    id: int
    email: str
    name: str
    role: str
    session_id: str

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return self.session_id

    @property
    def actor(self) -> Actor:
        return Actor(self.id, self.role)

    @property
    def display_name(self) -> str:
        return self.name or self.email

    def at_least(self, role: str) -> bool:
        return self.actor.at_least(role)


def services() -> Services:
    return current_app.extensions["cobrabot"]


def _session_id(agent: Agent) -> str:
    # The id carries a fingerprint of the password hash: changing a password signs out every other session.
    fingerprint = hashlib.sha256(agent.password_hash.encode()).hexdigest()[:16]
    return f"{agent.id}.{fingerprint}"


def _console_user(agent: Agent) -> ConsoleUser:
    return ConsoleUser(agent.id, agent.email, agent.name, agent.role, _session_id(agent))


def load_user(session_id: str) -> ConsoleUser | None:
    """Re-read the agent on every request, so a deactivated agent or a new password ends the session at once."""
    agent_id, _, _fingerprint = session_id.partition(".")
    if not agent_id.isdigit():
        return None
    with services().database.session() as session:
        agent = session.get(Agent, int(agent_id))
        if agent is None or not agent.active or _session_id(agent) != session_id:
            return None
        return _console_user(agent)


def init_login(app: Any) -> None:
    manager = LoginManager()
    manager.login_view = "admin.auth.login"
    manager.login_message = "Please sign in."
    manager.session_protection = "basic"  # "strong" would sign agents out whenever a proxy changes their IP
    manager.user_loader(load_user)
    manager.init_app(app)
    # Only the console uses sessions and forms; webhooks, the API and the portal prove themselves otherwise.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    app.extensions["admin_csrf"] = CSRFProtect(app)


def guard() -> ResponseReturnValue | None:
    """Runs before every console request: CSRF first (a forged POST changes nothing), then sign-in."""
    if request.method in STATE_CHANGING:
        current_app.extensions["admin_csrf"].protect()
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    if request.path.endswith(".json") or request.accept_mimetypes.best == "application/json":
        return jsonify(error="unauthenticated", message="sign in again"), 401
    return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]


def require_role(role: str) -> Callable[[F], F]:
    """`@require_role("manager")`: managers and admins pass, anyone below gets 403."""
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")

    def decorate(view: F) -> F:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.at_least(role):
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate


def current_actor() -> Actor:
    return current_user.actor


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(url_for("admin.inbox.inbox"))
        return render_template("admin/login.html", email="")
    email = request.form.get("email", "")[:254]
    password = request.form.get("password", "")[:1024]
    svc = services()
    with svc.database.session() as session:
        result = authenticate(session, email, password, svc.clock(), ip=request.remote_addr)
        session.commit()
    if result.agent is None:
        flash(REFUSALS[result.reason], "error")
        return render_template("admin/login.html", email=email), 401 if result.reason == "invalid" else 403
    login_user(_console_user(result.agent))
    logger.info("agent %s signed in", result.agent.id)
    return redirect(_safe_next(request.args.get("next")))


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: an open redirect would let a phishing link borrow our login page."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/admin/") and not target.startswith("//"):
            return target
    return url_for("admin.inbox.inbox")


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    with services().database.session() as session:
        agent = session.get(Agent, current_user.id)
        if agent is not None:
            record(session, current_user.actor.name, "agent.logged_out", agent)
            session.commit()
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("admin.auth.login"))
