"""The admins' page for console accounts: list, create, change role, deactivate/reactivate, reset password."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, current_app, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from admin import team
from admin.auth import current_actor, require_role
from admin.responses import run_action
from bot.agents import MIN_PASSWORD_LENGTH, ROLES
from bot.services import Services

blueprint = Blueprint("agents", __name__)


def services() -> Services:
    return current_app.extensions["cobrabot"]


@blueprint.get("/agents")
@require_role("admin")
def agents() -> ResponseReturnValue:
    with services().database.session() as session:
        return render_template(
            "admin/agents.html", agents=team.list_agents(session), roles=ROLES, min_password=MIN_PASSWORD_LENGTH
        )


@blueprint.post("/agents")
@require_role("admin")
def create() -> ResponseReturnValue:
    form = request.form
    return _act(
        lambda session: team.add_agent(
            session, current_actor(), form.get("email", ""), form.get("name", ""), form.get("role", ""),
            form.get("password", ""),
        ),
        f"Account {form.get('email', '').strip().lower()} created.",
    )  # fmt: skip


@blueprint.post("/agents/<int:agent_id>/role")
@require_role("admin")
def role(agent_id: int) -> ResponseReturnValue:
    new_role = request.form.get("role", "")
    return _act(lambda s: team.change_role(s, current_actor(), agent_id, new_role), f"Role changed to {new_role}.")


@blueprint.post("/agents/<int:agent_id>/active")
@require_role("admin")
def active(agent_id: int) -> ResponseReturnValue:
    activate = request.form.get("active") == "1"
    done = "Account reactivated." if activate else "Account deactivated: its sessions have ended."
    return _act(lambda s: team.set_active(s, current_actor(), agent_id, activate), done)


@blueprint.post("/agents/<int:agent_id>/password")
@require_role("admin")
def password(agent_id: int) -> ResponseReturnValue:
    new_password = request.form.get("password", "")
    done = "Password reset: the agent's other sessions have ended."
    return _act(lambda s: team.reset_password(s, current_actor(), agent_id, new_password), done)


def _act(change: Callable[[Session], object], done: str) -> ResponseReturnValue:
    def action() -> None:
        with services().database.session() as session:
            change(session)
            session.commit()  # a refusal raises before this line: nothing is saved

    return run_action(url_for(".agents"), action, done)
