"""The console's language: the agent's choice, else Accept-Language, else Spanish; every string the shared layout
and the dashboard ask for has a Spanish translation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from admin.i18n import SPANISH, translate
from tests.admin import csrf_token

TEMPLATES = Path(__file__).parents[2] / "admin" / "templates" / "admin"
TRANSLATED = ("base.html", "dashboard.html")
LITERAL = re.compile(r"""_\(\s*(["'])(.+?)\1\s*[,)]""")


@pytest.fixture
def web(agent: FlaskClient) -> FlaskClient:
    """Ana, an agent, signed in (tests/admin/conftest.py)."""
    return agent


def test_translate_falls_back_to_the_english_key() -> None:
    assert translate("Sign out", "es") == "Cerrar sesión"
    assert translate("Sign out", "en") == "Sign out"
    assert translate("Not in the catalog", "es") == "Not in the catalog"
    assert translate("Sign out", "fr") == "Sign out"


def test_every_string_in_the_translated_templates_has_spanish() -> None:
    wanted = {match.group(2) for name in TRANSLATED for match in LITERAL.finditer((TEMPLATES / name).read_text())}
    assert "Dashboard" in wanted and "Sign out" in wanted
    assert wanted - set(SPANISH) == set()
    assert all(value.strip() for value in SPANISH.values())


def test_spanish_without_accept_language(web: FlaskClient) -> None:
    page = web.get("/admin/inbox").get_data(as_text=True)
    assert '<html lang="es">' in page and "Cerrar sesión" in page and ">Bandeja <span" in page


def test_accept_language_picks_english(web: FlaskClient) -> None:
    page = web.get("/admin/inbox", headers={"Accept-Language": "en-US,en;q=0.9,es;q=0.5"}).get_data(as_text=True)
    assert '<html lang="en">' in page and "Sign out" in page


def test_unsupported_accept_language_falls_back_to_spanish(web: FlaskClient) -> None:
    page = web.get("/admin/inbox", headers={"Accept-Language": "fr-FR"}).get_data(as_text=True)
    assert '<html lang="es">' in page


def test_the_agents_choice_beats_accept_language_and_stays_in_the_session(web: FlaskClient) -> None:
    token = csrf_token(web, "/admin/inbox")
    response = web.post("/admin/language", data={"language": "en", "next": "/admin/cases", "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/cases")
    page = web.get("/admin/inbox", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert '<html lang="en">' in page and "Sign out" in page
    web.post("/admin/language", data={"language": "es", "csrf_token": token})
    assert "Cerrar sesión" in web.get("/admin/inbox", headers={"Accept-Language": "en"}).get_data(as_text=True)


def test_unknown_language_is_refused_and_changes_nothing(web: FlaskClient) -> None:
    token = csrf_token(web, "/admin/inbox")
    response = web.post("/admin/language", data={"language": "xx", "csrf_token": token})
    assert response.status_code == 400 and "unknown language" in response.get_data(as_text=True)
    assert '<html lang="es">' in web.get("/admin/inbox").get_data(as_text=True)


def test_switch_needs_csrf_and_never_redirects_outside_the_console(web: FlaskClient) -> None:
    assert web.post("/admin/language", data={"language": "en"}).status_code == 400
    token = csrf_token(web, "/admin/inbox")
    response = web.post(
        "/admin/language", data={"language": "en", "next": "https://evil.example/admin/", "csrf_token": token}
    )
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/inbox")
