"""Negotiation policy and cadence forms: the core's own validation, nothing saved on refusal, audit, roles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from bot.campaigns import Cadences
from bot.models import AuditEvent, Cadence, Creditor
from bot.negotiation import NegotiationPolicy
from bot.store import Database
from tests.admin import csrf_token

VALID = {
    "max_installments": "12",
    "min_down_payment_pct": "5",
    "min_installment_minor": "10000",
    "installment_interval": "monthly",
    "max_first_payment_delay_days": "10",
    "full_payment_discount_pct": "15",
    "full_payment_deadline_days": "5",
    "offer_expiry_hours": "72",
    "hardship_enabled": "on",
    "hardship_max_installments": "24",
    "hardship_min_down_payment_pct": "0",
}


@pytest.fixture
def creditor(make_creditor: Callable[..., Creditor]) -> Creditor:
    return make_creditor()


def _post(client: FlaskClient, path: str, data: dict[str, Any]):
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/cases")} | data)


def _policy(db: Database, creditor_id: int) -> dict[str, Any]:
    with db.session() as session:
        return dict(session.get_one(Creditor, creditor_id).negotiation_policy)


def _steps(db: Database, creditor_id: int) -> list[Any] | None:
    with db.session() as session:
        row = session.scalars(select(Cadence).where(Cadence.creditor_id == creditor_id)).first()
        return None if row is None else list(row.steps)


def test_a_valid_policy_is_saved_and_audited(boss: FlaskClient, db: Database, creditor: Creditor) -> None:
    page = boss.get(f"/admin/creditors/{creditor.id}/policy").get_data(as_text=True)
    assert 'name="max_installments" value="6"' in page  # the form starts from the default policy
    response = _post(boss, f"/admin/creditors/{creditor.id}/policy", VALID)
    assert response.status_code == 303
    policy = NegotiationPolicy.model_validate(_policy(db, creditor.id))
    assert policy.max_installments == 12 and policy.full_payment_deadline_days == 5
    assert policy.hardship is not None and policy.hardship.max_installments == 24
    with db.session() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "creditor.policy_changed")).one()
    assert event.data["old"] == {} and event.data["new"]["max_installments"] == 12


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"full_payment_deadline_days": ""}, "full_payment_discount_pct is set but full_payment_deadline_days is not"),
        ({"full_payment_discount_pct": "100"}, "full_payment_discount_pct: Input should be less than 100"),
        ({"max_installments": "0"}, "max_installments: Input should be greater than or equal to 1"),
        ({"installment_interval": "weekly"}, "installment_interval"),
        ({"hardship_max_installments": "3"}, "hardship.max_installments is stricter than the normal policy&#39;s"),
        ({"min_down_payment_pct": "lots"}, "min_down_payment_pct: Input should be a valid decimal"),
    ],
)
def test_an_inconsistent_policy_is_refused_and_unchanged(
    boss: FlaskClient, db: Database, creditor: Creditor, change: dict[str, str], message: str
) -> None:
    assert _post(boss, f"/admin/creditors/{creditor.id}/policy", VALID).status_code == 303
    before = _policy(db, creditor.id)
    response = _post(boss, f"/admin/creditors/{creditor.id}/policy", VALID | change)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert _policy(db, creditor.id) == before


def test_a_cadence_is_saved_with_channel_order_and_used_by_the_planner(
    boss: FlaskClient, db: Database, creditor: Creditor
) -> None:
    form = {
        "key": ["pre2", "due", "od5", ""],
        "offset_days": ["-2", "0", "5", ""],
        "template": ["reminder_before_due", "reminder_due_today", "reminder_overdue", ""],
        "channels": ["whatsapp, sms", "", "email", ""],
    }
    response = _post(boss, f"/admin/creditors/{creditor.id}/cadences/vip", form)
    assert response.status_code == 303
    steps = _steps(db, creditor.id)
    assert [step["key"] for step in steps] == ["pre2", "due", "od5"]
    assert steps[0]["channels"] == ["whatsapp", "sms"]
    with db.session() as session:
        spec = Cadences.load(session).for_debtor(creditor.id, "vip")
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "cadence.saved")).one()
    assert spec.steps[2].offset_days == 5
    assert event.data["old"] is None and event.data["new"] == steps


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"key": ["a", "b"], "offset_days": ["3", "1"], "template": ["reminder_overdue"] * 2, "channels": ["", ""]},
         "step offsets must be strictly increasing"),
        ({"key": ["a", "a"], "offset_days": ["1", "3"], "template": ["reminder_overdue"] * 2, "channels": ["", ""]},
         "step keys must be unique"),
        ({"key": ["a"], "offset_days": ["1"], "template": ["no_such_template"], "channels": [""]},
         "template &#39;no_such_template&#39; is missing in es, en"),
        ({"key": ["a"], "offset_days": ["soon"], "template": ["reminder_overdue"], "channels": [""]},
         "step 1 (a) offset_days: Input should be a valid integer"),
        ({"key": ["a"], "offset_days": ["1"], "template": ["reminder_overdue"], "channels": ["fax"]}, "channels"),
    ],
)  # fmt: skip
def test_an_invalid_cadence_is_refused_and_nothing_saved(
    boss: FlaskClient, db: Database, creditor: Creditor, form: dict[str, list[str]], message: str
) -> None:
    response = _post(boss, f"/admin/creditors/{creditor.id}/cadences/default", form)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert _steps(db, creditor.id) is None


def test_unknown_creditor_and_bad_segment(boss: FlaskClient, db: Database, creditor: Creditor) -> None:
    assert boss.get("/admin/creditors/999/policy").status_code == 404
    form = {"key": ["a"], "offset_days": ["1"], "template": ["reminder_overdue"], "channels": [""]}
    response = _post(boss, f"/admin/creditors/{creditor.id}/cadences/Bad-Segment", form)
    assert response.status_code == 422 and "segment" in response.get_data(as_text=True)
    assert _steps(db, creditor.id) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/admin/creditors"),
        ("get", "/admin/creditors/{id}/policy"),
        ("post", "/admin/creditors/{id}/policy"),
        ("get", "/admin/creditors/{id}/cadences/default"),
        ("post", "/admin/creditors/{id}/cadences/default"),
        ("post", "/admin/creditors/{id}/cadences"),
    ],
)
def test_agents_get_403(
    agent: FlaskClient, boss: FlaskClient, db: Database, creditor: Creditor, method: str, path: str
) -> None:
    url = path.format(id=creditor.id)
    if method == "post":
        assert _post(agent, url, VALID | {"segment": "x"}).status_code == 403
    else:
        assert agent.get(url).status_code == 403
        assert boss.get(url).status_code == 200
    assert _policy(db, creditor.id) == {} and _steps(db, creditor.id) is None


def test_posts_without_csrf_change_nothing(boss: FlaskClient, db: Database, creditor: Creditor) -> None:
    assert boss.post(f"/admin/creditors/{creditor.id}/policy", data=VALID).status_code == 400
    assert _policy(db, creditor.id) == {}
