"""The templates editor: list, preview, placeholder checks, public texts, versioned saves, reset, roles."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from bot.domain import InboundMessage
from bot.models import AuditEvent, Debtor, Template
from bot.services import Services
from bot.store import Database
from tests.admin import csrf_token

PAGE = "/admin/templates/thanks?locale=es&channel=*"


def _post(client: FlaskClient, key: str, body: str, action: str = "save", locale: str = "es", channel: str = "*"):
    token = csrf_token(client, PAGE)
    data = {"csrf_token": token, "locale": locale, "channel": channel, "body": body, "action": action}
    return client.post(f"/admin/templates/{key}", data=data)


def _overrides(db: Database) -> list[tuple[str, str, str, str, int]]:
    with db.session() as session:
        rows = session.execute(select(Template.key, Template.locale, Template.channel, Template.body, Template.version))
        return [tuple(row) for row in rows]


def test_the_list_shows_every_key_with_its_defaults(boss: FlaskClient) -> None:
    page = boss.get("/admin/templates").get_data(as_text=True)
    assert "greeting_balance" in page and "verify_identity" in page
    assert "Esos datos no coinciden" in page and "does not match our records" in page.replace("do not", "does not")


def test_preview_renders_with_sample_facts_and_saves_nothing(boss: FlaskClient, db: Database) -> None:
    response = _post(
        boss, "balance_detail", "Su saldo con {{ creditor_name }}: {{ balance | money }}", action="preview"
    )
    assert response.status_code == 200
    assert "Su saldo con Acme: 150.000\xa0CLP" in response.get_data(as_text=True)
    assert _overrides(db) == []


def test_an_unknown_placeholder_is_refused_with_the_allowed_ones(boss: FlaskClient, db: Database) -> None:
    response = _post(boss, "thanks", "Gracias {{ debtor_name }}, su RUT es {{ national_id }}")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Unknown placeholder(s) national_id for &#39;thanks&#39;" in page
    assert "this text can use: debtor_name" in page
    assert _overrides(db) == []


def test_a_template_that_does_not_parse_is_refused(boss: FlaskClient, db: Database) -> None:
    response = _post(boss, "thanks", "Gracias {{ debtor_name ")
    assert response.status_code == 422
    assert "does not parse" in response.get_data(as_text=True)
    assert _overrides(db) == []


def test_a_public_template_must_not_gain_placeholders(boss: FlaskClient, db: Database) -> None:
    response = _post(boss, "verify_identity", "Hola {{ debtor_name }}, ¿los 4 dígitos de su documento?")
    assert response.status_code == 422
    assert "said before identity is verified" in response.get_data(as_text=True)
    assert _overrides(db) == []
    assert _post(boss, "verify_identity", "Hola. ¿Los 4 últimos dígitos de su documento?").status_code == 303


def test_saving_bumps_the_version_audits_and_the_bot_uses_it(
    boss: FlaskClient, db: Database, services: Services, make_debtor: Callable[..., Debtor]
) -> None:
    assert _post(boss, "verify_identity", "Primero, ¿los 4 últimos dígitos de su RUT?").status_code == 303
    assert _post(boss, "verify_identity", "Para empezar, ¿los 4 últimos dígitos de su RUT?").status_code == 303
    assert _overrides(db) == [("verify_identity", "es", "*", "Para empezar, ¿los 4 últimos dígitos de su RUT?", 2)]
    with db.session() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "template.saved")).all()
        assert [event.data["version"] for event in events] == [1, 2]
        assert events[1].data["old"] == "Primero, ¿los 4 últimos dígitos de su RUT?"
        assert events[1].data["new"] == "Para empezar, ¿los 4 últimos dígitos de su RUT?"
        assert events[0].data["old"].startswith("Hola. Para proteger sus datos")

    debtor = make_debtor()
    received = services.conversations.receive(
        InboundMessage("sms", debtor.phone, "hola", provider_message_id="t1"), debtor.id
    )
    assert [reply.text for reply in received.replies] == ["Para empezar, ¿los 4 últimos dígitos de su RUT?"]


def test_reset_deletes_the_override(boss: FlaskClient, db: Database) -> None:
    assert _post(boss, "thanks", "¡Mil gracias, {{ debtor_name }}!", channel="sms").status_code == 303
    token = csrf_token(boss, PAGE)
    response = boss.post("/admin/templates/thanks/reset", data={"csrf_token": token, "locale": "es", "channel": "sms"})
    assert response.status_code == 303
    assert _overrides(db) == []
    with db.session() as session:
        assert session.scalars(select(AuditEvent.action).where(AuditEvent.action == "template.reset")).all()


def test_bad_targets_are_refused(boss: FlaskClient, db: Database) -> None:
    assert boss.get("/admin/templates/no_such_key").status_code == 404
    assert boss.get("/admin/templates/thanks?locale=fr").status_code == 400
    assert _post(boss, "thanks", "Gracias", channel="fax").status_code == 400
    assert _post(boss, "thanks", "   ").status_code == 422
    assert _overrides(db) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/admin/templates"),
        ("get", PAGE),
        ("post", "/admin/templates/thanks"),
        ("post", "/admin/templates/thanks/reset"),
    ],
)
def test_agents_get_403(agent: FlaskClient, db: Database, method: str, path: str) -> None:
    token = csrf_token(agent, "/admin/cases")
    kwargs = {"data": {"csrf_token": token, "locale": "es", "channel": "*", "body": "x"}} if method == "post" else {}
    assert getattr(agent, method)(path, **kwargs).status_code == 403
    assert _overrides(db) == []


def test_posts_without_csrf_change_nothing(boss: FlaskClient, db: Database) -> None:
    response = boss.post("/admin/templates/thanks", data={"locale": "es", "channel": "*", "body": "Gracias"})
    assert response.status_code == 400
    assert _overrides(db) == []
