"""Walks the console's URL map: every state-changing route needs a signed-in agent, the right role and a CSRF
token, and a request refused for any of those changes nothing. A new POST route must be added to ROLE_OF, so
nobody ships one without deciding who may use it."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.routing import Rule

from bot.models import AuditEvent, Base
from bot.store import Database
from tests.admin import csrf_token, signed_in

# The lowest role each state-changing console route admits.
ROLE_OF = {
    "admin.agents.create": "admin",
    "admin.agents.active": "admin",
    "admin.agents.password": "admin",
    "admin.agents.role": "admin",
    "admin.cases.assign": "manager",
    "admin.cases.reject": "agent",
    "admin.cases.take": "agent",
    "admin.cases.uphold": "agent",
    "admin.inbox.assign": "manager",
    "admin.inbox.claim": "agent",
    "admin.inbox.note": "agent",
    "admin.inbox.reply": "agent",
    "admin.inbox.resolve": "agent",
    "admin.inbox.return_to_bot": "agent",
    "admin.policies.new_cadence": "manager",
    "admin.policies.cadence": "manager",
    "admin.policies.policy": "manager",
    "admin.debtors.opt_out": "agent",
    "admin.debtors.pause": "agent",
    "admin.debtors.payment_link": "agent",
    "admin.flows.publish": "manager",
    "admin.flows.rollback": "manager",
    "admin.flows.simulate": "manager",
    "admin.flows.save_draft": "manager",
    "admin.flows.validate": "manager",
    "admin.auth.logout": "agent",
    "admin.language.choose": "agent",
    "admin.reconciliation.assign": "agent",
    "admin.reconciliation.confirm": "agent",
    "admin.reconciliation.ignore": "agent",
    "admin.reconciliation.upload": "manager",
    "admin.templates.save": "manager",
    "admin.templates.reset": "manager",
}
ANONYMOUS_ALLOWED = {"admin.auth.login"}
BELOW = {"agent": (), "manager": ("agent",), "admin": ("agent", "manager")}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _state_changing_rules(app: Flask) -> list[tuple[Rule, str]]:
    return [
        (rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("admin.") and rule.endpoint not in ANONYMOUS_ALLOWED
        for method in sorted(STATE_CHANGING & set(rule.methods or ()))
    ]


def _concrete(rule: Rule) -> str:
    path = re.sub(r"<int:\w+>", "1", rule.rule)
    return path.replace("<name>", "collections").replace("<segment>", "default").replace("<key>", "thanks")


def _snapshot(db: Database) -> dict[str, int]:
    """Row counts of every table: a refused request must leave all of them as they were."""
    with db.session() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def test_every_state_changing_route_has_a_declared_role(console: Flask) -> None:
    assert {rule.endpoint for rule, _ in _state_changing_rules(console)} == set(ROLE_OF)


def test_without_sign_in_nothing_changes(console: Flask, db: Database) -> None:
    client = console.test_client()
    token = csrf_token(client)  # a valid token: only the missing sign-in refuses these
    before = _snapshot(db)
    for rule, method in _state_changing_rules(console):
        response = client.open(_concrete(rule), method=method, data={"csrf_token": token})
        assert response.status_code in (302, 401), (rule.endpoint, response.status_code)
    assert _snapshot(db) == before


def test_without_a_csrf_token_even_an_admin_changes_nothing(console: Flask, db: Database) -> None:
    admin = signed_in(console, db, "admin@cobrabot.example", "admin")
    before = _snapshot(db)
    for rule, method in _state_changing_rules(console):
        response = admin.open(_concrete(rule), method=method, data={"text": "x"})
        assert response.status_code == 400, (rule.endpoint, response.status_code)
    assert _snapshot(db) == before


@pytest.mark.parametrize("role", ["agent", "manager"])
def test_a_role_below_the_routes_gets_403_and_changes_nothing(console: Flask, db: Database, role: str) -> None:
    client = signed_in(console, db, f"{role}@cobrabot.example", role)
    token = csrf_token(client, "/admin/inbox")
    before = _snapshot(db)
    audited = before[AuditEvent.__tablename__]
    for rule, method in _state_changing_rules(console):
        if role in BELOW[ROLE_OF[rule.endpoint]]:
            response = client.open(_concrete(rule), method=method, data={"csrf_token": token})
            assert response.status_code == 403, (role, rule.endpoint, response.status_code)
    assert _snapshot(db) == before and _snapshot(db)[AuditEvent.__tablename__] == audited
