"""Account management for admins: create, role, deactivate (ends sessions), reset password, the last admin kept."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bot.models import Agent, AuditEvent
from bot.store import Database
from tests.admin import PASSWORD, add_agent, csrf_token, sign_in

NEW_PASSWORD = "another long passphrase"


@pytest.fixture
def admin_id(db: Database) -> int:
    return add_agent(db, "root@cobrabot.example", role="admin")


@pytest.fixture
def web(console: Flask, admin_id: int) -> FlaskClient:
    client = console.test_client()
    assert sign_in(client, "root@cobrabot.example").status_code == 302
    return client


def _post(web: FlaskClient, path: str, **form: str) -> str:
    response = web.post(path, data={"csrf_token": csrf_token(web, "/admin/agents"), **form})
    assert response.status_code == 303, response.status_code
    return web.get(response.headers["Location"]).get_data(as_text=True)


def _agent(db: Database, email: str) -> Agent | None:
    with db.session() as session:
        return session.scalars(select(Agent).where(Agent.email == email)).one_or_none()


def _actions(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("agent.%"))))


def test_an_admin_creates_an_account_that_can_sign_in(web: FlaskClient, console: Flask, db: Database) -> None:
    page = _post(web, "/admin/agents", email=" Nora@Cobrabot.example ", name="Nora", role="manager", password=PASSWORD)
    assert "Account nora@cobrabot.example created." in page
    created = _agent(db, "nora@cobrabot.example")
    assert created is not None and (created.role, created.name, created.active) == ("manager", "Nora", True)
    assert created.password_hash.startswith("$argon2id$")
    assert sign_in(console.test_client(), "nora@cobrabot.example").status_code == 302
    assert "agent.created" in _actions(db)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"email": "root@cobrabot.example", "role": "agent", "password": PASSWORD}, "already exists"),
        ({"email": "not-an-email", "role": "agent", "password": PASSWORD}, "email must be an email address"),
        ({"email": "x@cobrabot.example", "role": "owner", "password": PASSWORD}, "role must be one of"),
        ({"email": "x@cobrabot.example", "role": "agent", "password": "short"}, "at least 10 characters"),
    ],
)
def test_bad_account_input_is_refused_and_nothing_is_saved(
    web: FlaskClient, db: Database, form: dict[str, str], message: str
) -> None:
    page = _post(web, "/admin/agents", name="X", **form)
    assert message in page
    with db.session() as session:
        assert session.scalars(select(Agent.email)).all() == ["root@cobrabot.example"]


def test_deactivating_ends_the_agents_session_and_reactivating_restores_sign_in(
    web: FlaskClient, console: Flask, db: Database
) -> None:
    agent_id = add_agent(db, "ana@cobrabot.example")
    ana = console.test_client()
    sign_in(ana, "ana@cobrabot.example")
    assert ana.get("/admin/inbox").status_code == 200

    assert "Account deactivated" in _post(web, f"/admin/agents/{agent_id}/active", active="0")
    assert ana.get("/admin/inbox").status_code == 302  # signed out at once
    assert sign_in(console.test_client(), "ana@cobrabot.example").status_code == 403  # refused: disabled

    _post(web, f"/admin/agents/{agent_id}/active", active="1")
    assert sign_in(console.test_client(), "ana@cobrabot.example").status_code == 302
    assert _actions(db).count("agent.deactivated") == 1 and "agent.activated" in _actions(db)


def test_a_password_reset_ends_other_sessions_and_is_audited_without_the_password(
    web: FlaskClient, console: Flask, db: Database
) -> None:
    agent_id = add_agent(db, "ana@cobrabot.example")
    ana = console.test_client()
    sign_in(ana, "ana@cobrabot.example")
    assert "Password reset" in _post(web, f"/admin/agents/{agent_id}/password", password=NEW_PASSWORD)
    assert ana.get("/admin/inbox").status_code == 302
    assert sign_in(console.test_client(), "ana@cobrabot.example", NEW_PASSWORD).status_code == 302
    with db.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "agent.password_reset")).all()
        assert NEW_PASSWORD not in str(event.data)
    assert "at least 10 characters" in _post(web, f"/admin/agents/{agent_id}/password", password="short")


def test_role_changes_and_the_last_admin_is_protected(web: FlaskClient, db: Database, admin_id: int) -> None:
    agent_id = add_agent(db, "ana@cobrabot.example")
    assert "Role changed to manager." in _post(web, f"/admin/agents/{agent_id}/role", role="manager")
    assert _agent(db, "ana@cobrabot.example").role == "manager"  # type: ignore[union-attr]

    assert "cannot change your own role" in _post(web, f"/admin/agents/{admin_id}/role", role="agent")
    assert "cannot deactivate your own account" in _post(web, f"/admin/agents/{admin_id}/active", active="0")
    other_admin = add_agent(db, "boss@cobrabot.example", role="admin", active=False)
    _post(web, f"/admin/agents/{other_admin}/active", active="1")
    # Two active admins now: one of them may be demoted; the remaining one may not.
    assert "Role changed to agent." in _post(web, f"/admin/agents/{other_admin}/role", role="agent")
    _post(web, f"/admin/agents/{other_admin}/role", role="admin")
    assert _agent(db, "root@cobrabot.example").role == "admin"  # type: ignore[union-attr]
    assert "Role must be one of" in _post(web, f"/admin/agents/{agent_id}/role", role="owner")


def test_last_admin_cannot_be_removed_by_another_path(db: Database) -> None:
    from admin import team
    from admin.services import Actor, ConsoleError

    only_admin = add_agent(db, "root@cobrabot.example", role="admin")
    helper = add_agent(db, "helper@cobrabot.example", role="admin", active=False)
    with db.session() as session, pytest.raises(ConsoleError, match="last active admin"):
        team.change_role(session, Actor(helper, "admin"), only_admin, "manager")
    with db.session() as session, pytest.raises(ConsoleError, match="last active admin"):
        team.set_active(session, Actor(helper, "admin"), only_admin, False)


@pytest.mark.parametrize("role", ["agent", "manager"])
def test_only_admins_manage_accounts(console: Flask, db: Database, role: str) -> None:
    add_agent(db, f"{role}@cobrabot.example", role=role)
    client = console.test_client()
    sign_in(client, f"{role}@cobrabot.example")
    assert client.get("/admin/agents").status_code == 403
    token = csrf_token(client, "/admin/inbox")
    target = add_agent(db, "victim@cobrabot.example")
    for path, form in (
        ("/admin/agents", {"email": "x@cobrabot.example", "role": "admin", "password": PASSWORD}),
        (f"/admin/agents/{target}/role", {"role": "admin"}),
        (f"/admin/agents/{target}/active", {"active": "0"}),
        (f"/admin/agents/{target}/password", {"password": PASSWORD + "!"}),
    ):
        assert client.post(path, data={"csrf_token": token, **form}).status_code == 403, path
    assert _agent(db, "x@cobrabot.example") is None
    victim = _agent(db, "victim@cobrabot.example")
    assert victim is not None and (victim.role, victim.active) == ("agent", True)
    assert "Accounts" not in client.get("/admin/inbox").get_data(as_text=True)
