"""TemplateRenderer: most specific text wins (DB override > shipped default; channel > '*'; es-CL > es),
strict variables, and a sandbox that keeps manager-edited templates away from Python internals."""

from __future__ import annotations

from datetime import date

import pytest
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from bot.domain import Money
from bot.models import Template
from bot.store import Database
from bot.templates import TemplateError, TemplateRenderer, default_templates

NAMES = {"debtor_name": "Ana", "creditor_name": "Aguas del Valle"}


def test_shipped_default_is_used_without_overrides() -> None:
    text = TemplateRenderer().render("greeting_no_debt", "es-CL", "sms", NAMES)
    assert text == "Hola Ana, le escribe Aguas del Valle. No tiene saldos pendientes. ¡Gracias!"


def test_money_and_date_filters_format_in_the_debtors_locale() -> None:
    variables = {**NAMES, "balance": Money(1234567, "CLP"), "due_date": date(2026, 12, 5)}
    text = TemplateRenderer().render("greeting_balance", "es-CL", "whatsapp", variables)
    assert "$1.234.567" in text
    assert "5 de diciembre de 2026" in text


def test_regional_locale_falls_back_to_its_language() -> None:
    renderer = TemplateRenderer({("portal_send", "es", "*"): "Mandar"})
    assert renderer.render("portal_send", "es-CL", "webchat", {}) == "Mandar"
    assert TemplateRenderer().render("portal_send", "en-US", "webchat", {}) == "Send"


def test_regional_override_beats_the_language_override() -> None:
    renderer = TemplateRenderer({("portal_send", "es", "*"): "Mandar", ("portal_send", "es-CL", "*"): "Enviar ya"})
    assert renderer.render("portal_send", "es-CL", "webchat", {}) == "Enviar ya"
    assert renderer.render("portal_send", "es-MX", "webchat", {}) == "Mandar"


def test_channel_specific_override_beats_any_channel() -> None:
    renderer = TemplateRenderer({("portal_send", "es", "*"): "Enviar", ("portal_send", "es", "sms"): "ENVIAR"})
    assert renderer.render("portal_send", "es", "sms", {}) == "ENVIAR"
    assert renderer.render("portal_send", "es", "whatsapp", {}) == "Enviar"


def test_database_override_beats_the_shipped_default(db: Database) -> None:
    with db.session() as session:
        session.add(Template(key="greeting_no_debt", locale="es", channel="*", body="Hola {{ debtor_name }}, al día."))
        session.add(Template(key="portal_send", locale="en", channel="webchat", body="Go"))
        session.commit()
        renderer = TemplateRenderer.from_session(session)
    assert renderer.render("greeting_no_debt", "es-CL", "sms", NAMES) == "Hola Ana, al día."
    assert renderer.render("portal_send", "en-US", "webchat", {}) == "Go"
    assert renderer.render("portal_send", "en-US", "sms", {}) == "Send"


def test_missing_variable_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="creditor_name"):
        TemplateRenderer().render("greeting_no_debt", "es", "sms", {"debtor_name": "Ana"})


def test_unknown_key_and_broken_syntax_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="no_such_key"):
        TemplateRenderer().render("no_such_key", "es", "sms", {})
    with pytest.raises(TemplateError):
        TemplateRenderer({("portal_send", "es", "*"): "{{ oops"}).render("portal_send", "es", "sms", {})


def test_money_filter_refuses_plain_numbers() -> None:
    renderer = TemplateRenderer({("portal_send", "es", "*"): "{{ amount | money }}"})
    with pytest.raises(TemplateError, match="Money"):
        renderer.render("portal_send", "es", "sms", {"amount": 45990})


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ creditor_name.__init__.__globals__ }}",
    ],
)
def test_sandbox_blocks_python_internals(body: str) -> None:
    renderer = TemplateRenderer({("portal_send", "es", "*"): body})
    with pytest.raises((SecurityError, TemplateError)):
        renderer.render("portal_send", "es", "sms", NAMES)


def test_unsafe_template_is_reported_as_a_template_error() -> None:
    renderer = TemplateRenderer({("portal_send", "es", "*"): "{{ ''.__class__ }}"})
    with pytest.raises(TemplateError):
        renderer.render("portal_send", "es", "sms", {})


def _variables(body: str) -> set[str]:
    environment = SandboxedEnvironment()
    environment.filters.update(money=str, date=str)  # parsing only needs the filter names to exist
    return meta.find_undeclared_variables(environment.parse(body))


def test_spanish_and_english_define_the_same_keys_channels_and_variables() -> None:
    spanish, english = default_templates("es"), default_templates("en")
    assert spanish.keys() == english.keys()
    for key in spanish:
        assert spanish[key].keys() == english[key].keys(), key
        for channel in spanish[key]:
            assert _variables(spanish[key][channel]) == _variables(english[key][channel]), (key, channel)


def _override(db: Database, body: str) -> None:
    with db.session() as session:
        session.add(Template(key="greeting_no_debt", locale="es", channel="*", body=body))
        session.commit()


def _greeting(db: Database) -> str:
    with db.session() as session:
        return TemplateRenderer.from_session(session).source("greeting_no_debt", "es", "sms")


def test_an_override_saved_in_this_process_is_used_at_once(db: Database) -> None:
    default = _greeting(db)  # cached now
    _override(db, "Hola {{ name }}, versión 1")
    assert _greeting(db) == "Hola {{ name }}, versión 1" != default
    with db.session() as session:
        session.query(Template).filter_by(key="greeting_no_debt").update({"body": "Hola {{ name }}, versión 2"})
        session.commit()
    assert _greeting(db) == "Hola {{ name }}, versión 2"


def test_a_rolled_back_edit_is_never_served(db: Database) -> None:
    default = _greeting(db)
    with db.session() as session:
        session.add(Template(key="greeting_no_debt", locale="es", channel="*", body="borrador"))
        session.flush()
        # The writing session sees its own draft without caching it...
        assert TemplateRenderer.from_session(session).source("greeting_no_debt", "es", "sms") == "borrador"
        session.rollback()
    assert _greeting(db) == default  # ...and nobody sees it after the rollback


def test_another_process_edit_is_seen_after_the_ttl(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    default = _greeting(db)
    with db.engine.begin() as connection:  # behind this process's ORM, as another process would write
        row = {"key": "greeting_no_debt", "locale": "es", "channel": "*", "body": "B"}
        connection.execute(Template.__table__.insert().values(**row))
    assert _greeting(db) == default  # within the TTL: the cached overrides, no query
    monkeypatch.setattr("bot.templates.OVERRIDES_TTL_SECONDS", 0.0)
    assert _greeting(db) == "B"
