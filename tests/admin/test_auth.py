"""Console access: sign-in with lockout, inactive agents, every page behind sign-in, roles and CSRF."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bot.models import Agent, AuditEvent, Conversation, Debtor
from bot.store import Database
from tests.admin import PASSWORD, add_agent, agent_row, csrf_token, handed_off, sign_in
from tests.conftest import FixedClock

PUBLIC = {"admin.auth.login", "admin.static"}


@pytest.fixture
def web(console: Flask) -> FlaskClient:
    return console.test_client()


def _actions(db: Database, action: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)) or 0


def test_login_with_the_right_password_opens_the_inbox(web: FlaskClient, db: Database, clock: FixedClock) -> None:
    agent_id = add_agent(db, "ana@cobrabot.example")
    response = sign_in(web, "Ana@Cobrabot.example")
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/inbox")
    assert web.get("/admin/inbox").status_code == 200
    assert agent_row(db, agent_id).last_login_at == clock()
    assert _actions(db, "agent.logged_in") == 1


def test_wrong_password_is_refused_and_counted(web: FlaskClient, db: Database) -> None:
    agent_id = add_agent(db, "ana@cobrabot.example")
    response = sign_in(web, "ana@cobrabot.example", "not the password")
    assert response.status_code == 401
    assert "Wrong email or password" in response.get_data(as_text=True)
    assert agent_row(db, agent_id).failed_logins == 1
    assert web.get("/admin/inbox").status_code == 302


def test_unknown_email_gets_the_same_answer(web: FlaskClient, db: Database) -> None:
    response = sign_in(web, "nobody@cobrabot.example")
    assert response.status_code == 401
    assert "Wrong email or password" in response.get_data(as_text=True)


def test_five_wrong_passwords_lock_the_account_for_15_minutes(
    web: FlaskClient, db: Database, clock: FixedClock
) -> None:
    agent_id = add_agent(db, "ana@cobrabot.example")
    for _ in range(4):
        assert sign_in(web, "ana@cobrabot.example", "wrong password!").status_code == 401
    fifth = sign_in(web, "ana@cobrabot.example", "wrong password!")
    assert fifth.status_code == 403 and "locked for 15 minutes" in fifth.get_data(as_text=True)
    assert agent_row(db, agent_id).locked_until == clock() + timedelta(minutes=15)
    # Even the right password is refused while locked.
    assert sign_in(web, "ana@cobrabot.example").status_code == 403
    assert web.get("/admin/inbox").status_code == 302
    assert _actions(db, "agent.locked_out") == 1

    clock.advance(minutes=14, seconds=59)
    assert sign_in(web, "ana@cobrabot.example").status_code == 403
    clock.advance(seconds=2)
    assert sign_in(web, "ana@cobrabot.example").status_code == 302
    agent = agent_row(db, agent_id)
    assert agent.failed_logins == 0 and agent.locked_until is None


def test_inactive_agent_is_refused(web: FlaskClient, db: Database) -> None:
    add_agent(db, "gone@cobrabot.example", active=False)
    response = sign_in(web, "gone@cobrabot.example")
    assert response.status_code == 403 and "disabled" in response.get_data(as_text=True)
    assert web.get("/admin/inbox").status_code == 302


def test_deactivating_an_agent_ends_their_session(web: FlaskClient, db: Database) -> None:
    agent_id = add_agent(db, "ana@cobrabot.example")
    sign_in(web, "ana@cobrabot.example")
    assert web.get("/admin/inbox").status_code == 200
    with db.session() as session:
        session.get_one(Agent, agent_id).active = False
        session.commit()
    assert web.get("/admin/inbox").status_code == 302


def test_logout_ends_the_session(web: FlaskClient, db: Database) -> None:
    add_agent(db, "ana@cobrabot.example")
    sign_in(web, "ana@cobrabot.example")
    token = csrf_token(web, "/admin/inbox")
    assert web.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert web.get("/admin/inbox").status_code == 302
    assert _actions(db, "agent.logged_out") == 1


def test_login_redirects_only_inside_the_console(web: FlaskClient, db: Database) -> None:
    add_agent(db, "ana@cobrabot.example")
    token = csrf_token(web)
    form = {"email": "ana@cobrabot.example", "password": PASSWORD, "csrf_token": token}
    response = web.post("/admin/login?next=https://evil.example/admin/", data=form)
    assert response.headers["Location"].endswith("/admin/inbox")


def _concrete(rule: str) -> str:
    return re.sub(r"<int:\w+>", "1", rule).replace("<path:filename>", "admin.css")


def test_every_console_route_requires_sign_in(console: Flask, web: FlaskClient, db: Database) -> None:
    rules = [rule for rule in console.url_map.iter_rules() if rule.endpoint.startswith("admin.")]
    assert {rule.endpoint for rule in rules} >= {"admin.inbox.inbox", "admin.inbox.reply", "admin.inbox.assign"}
    for rule in rules:
        if rule.endpoint in PUBLIC:
            continue
        for method in {"GET", "POST"} & set(rule.methods or ()):
            response = web.open(_concrete(rule.rule), method=method)
            assert not 200 <= response.status_code < 300, (rule.endpoint, method, response.status_code)
            if method == "GET":
                assert response.status_code in (302, 401), (rule.endpoint, response.status_code)


def test_anonymous_page_redirects_to_login_and_json_gets_401(web: FlaskClient) -> None:
    page = web.get("/admin/inbox")
    assert page.status_code == 302 and "/admin/login" in page.headers["Location"]
    assert web.get("/admin/inbox.json").status_code == 401


def test_agent_cannot_use_a_manager_route(
    web: FlaskClient, db: Database, clock: FixedClock, make_debtor: Callable[..., Debtor]
) -> None:
    add_agent(db, "ana@cobrabot.example")
    other = add_agent(db, "bea@cobrabot.example")
    conversation_id = handed_off(db, make_debtor(), clock())
    sign_in(web, "ana@cobrabot.example")
    token = csrf_token(web, "/admin/inbox")
    response = web.post(f"/admin/conversations/{conversation_id}/assign", data={"agent_id": other, "csrf_token": token})
    assert response.status_code == 403
    with db.session() as session:
        assert session.get_one(Conversation, conversation_id).assigned_agent_id is None


def test_manager_can_assign(
    web: FlaskClient, db: Database, clock: FixedClock, make_debtor: Callable[..., Debtor]
) -> None:
    add_agent(db, "boss@cobrabot.example", role="manager")
    other = add_agent(db, "bea@cobrabot.example")
    conversation_id = handed_off(db, make_debtor(), clock())
    sign_in(web, "boss@cobrabot.example")
    token = csrf_token(web, "/admin/inbox")
    response = web.post(f"/admin/conversations/{conversation_id}/assign", data={"agent_id": other, "csrf_token": token})
    assert response.status_code == 303
    with db.session() as session:
        assert session.get_one(Conversation, conversation_id).assigned_agent_id == other
    assert _actions(db, "conversation.assigned") == 1


def test_post_without_csrf_token_is_refused_and_changes_nothing(
    web: FlaskClient, db: Database, clock: FixedClock, make_debtor: Callable[..., Debtor]
) -> None:
    add_agent(db, "ana@cobrabot.example")
    conversation_id = handed_off(db, make_debtor(), clock())
    sign_in(web, "ana@cobrabot.example")
    assert web.post(f"/admin/conversations/{conversation_id}/claim").status_code == 400
    assert web.post(f"/admin/conversations/{conversation_id}/claim", data={"csrf_token": "forged"}).status_code == 400
    with db.session() as session:
        assert session.get_one(Conversation, conversation_id).assigned_agent_id is None
    token = csrf_token(web, "/admin/inbox")
    assert web.post(f"/admin/conversations/{conversation_id}/claim", data={"csrf_token": token}).status_code == 303
    with db.session() as session:
        assert session.get_one(Conversation, conversation_id).assigned_agent_id is not None


def test_login_form_itself_needs_a_csrf_token(web: FlaskClient, db: Database) -> None:
    add_agent(db, "ana@cobrabot.example")
    response = web.post("/admin/login", data={"email": "ana@cobrabot.example", "password": PASSWORD})
    assert response.status_code == 400
    assert web.get("/admin/inbox").status_code == 302


def test_csrf_does_not_reach_the_api_webhooks_or_portal(web: FlaskClient, api_headers: dict[str, str]) -> None:
    # Bearer-token, signature and link-token endpoints answer for themselves: no console token is asked for.
    api = web.post("/api/v1/creditors/nobody/debtors/C-1/portal-link", json={}, headers=api_headers)
    webhook = web.post("/webhooks/twilio/sms", data={"Body": "hola"})
    portal = web.post("/p/not-a-token/chat", json={"text": "hola"})
    for response in (api, webhook, portal):
        assert response.status_code == 404, response.get_data(as_text=True)
        assert "CSRF" not in response.get_data(as_text=True)


def test_session_cookie_is_httponly_lax_and_secure_on_https(web: FlaskClient, db: Database) -> None:
    add_agent(db, "ana@cobrabot.example")
    response = sign_in(web, "ana@cobrabot.example")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
