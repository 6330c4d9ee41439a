"""/u/<token>: the List-Unsubscribe page and RFC 8058 one-click POST, against the real database."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bot.models import AuditEvent, ConsentOptOut, Debtor, Template
from bot.store import Database
from bot.unsubscribe import UnsubscribeLinks
from bot.web import unsubscribe
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET, FixedClock

# The page's texts as a manager's template rows: the tests do not depend on the shipped YAML's wording.
TEXTS = {
    "es": {
        "unsubscribe_page_title": "Darse de baja: {{ creditor_name }}",
        "unsubscribe_page_confirm": "¿Dejar de recibir correos de {{ creditor_name }}?",
        "unsubscribe_page_button": "Sí, darme de baja",
        "unsubscribe_page_done": "Listo: no le enviaremos más correos.",
    },
    "en": {
        "unsubscribe_page_title": "Unsubscribe: {{ creditor_name }}",
        "unsubscribe_page_confirm": "Stop receiving emails from {{ creditor_name }}?",
        "unsubscribe_page_button": "Yes, unsubscribe me",
        "unsubscribe_page_done": "Done: we will not email you again.",
    },
}
ONE_CLICK = {"data": "List-Unsubscribe=One-Click", "content_type": "application/x-www-form-urlencoded"}


@pytest.fixture
def web(app: Flask, db: Database) -> FlaskClient:
    if "unsubscribe" not in app.blueprints:  # until bot/app.py registers it
        app.register_blueprint(unsubscribe.blueprint)
    with db.session() as session:
        session.add_all(
            Template(key=key, locale=language, channel="*", body=body)
            for language, texts in TEXTS.items()
            for key, body in texts.items()
        )
        session.commit()
    return app.test_client()


def link(debtor_id: int, channel: str = "email", secret: str = TEST_SECRET) -> str:
    return UnsubscribeLinks(secret, TEST_PUBLIC_URL).url(debtor_id, channel).removeprefix(TEST_PUBLIC_URL)


def opt_outs(db: Database) -> list[ConsentOptOut]:
    with db.session() as session:
        return list(session.scalars(select(ConsentOptOut)))


def audit_events(db: Database) -> list[AuditEvent]:
    with db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == "consent.opted_out")))


def test_get_shows_the_confirmation_in_the_debtors_language_and_changes_nothing(
    web: FlaskClient, make_debtor: Callable[..., Debtor], db: Database
) -> None:
    debtor = make_debtor()  # es-CL, the creditor's default

    response = web.get(link(debtor.id))

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<html lang="es">' in page
    assert "<title>Darse de baja: Aguas del Valle</title>" in page
    assert "¿Dejar de recibir correos de Aguas del Valle?" in page
    assert '<form method="post">' in page and "Sí, darme de baja</button>" in page
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert opt_outs(db) == []


def test_an_english_debtor_gets_the_english_page(web: FlaskClient, make_debtor: Callable[..., Debtor]) -> None:
    debtor = make_debtor(locale="en-US")

    page = web.get(link(debtor.id)).get_data(as_text=True)

    assert '<html lang="en">' in page
    assert "Stop receiving emails from Aguas del Valle?" in page


def test_one_click_post_records_the_opt_out_once(
    web: FlaskClient, make_debtor: Callable[..., Debtor], db: Database, clock: FixedClock
) -> None:
    debtor = make_debtor()
    first_click_at = clock.now

    first = web.post(link(debtor.id), **ONE_CLICK)
    clock.advance(minutes=5)
    second = web.post(link(debtor.id), **ONE_CLICK)  # the provider retries, or the debtor clicks the button too

    assert first.status_code == second.status_code == 200
    assert "Listo: no le enviaremos más correos." in second.get_data(as_text=True)
    [opt_out] = opt_outs(db)
    assert (opt_out.debtor_id, opt_out.channel, opt_out.source) == (debtor.id, "email", "unsubscribe_link")
    assert opt_out.created_at == first_click_at
    assert opt_out.revoked_at is None
    [event] = audit_events(db)
    assert (event.actor, event.subject_type, event.subject_id) == ("debtor", "consentoptout", str(opt_out.id))
    assert event.data == {"channel": "email", "via": "unsubscribe_link"}
    # Afterwards the link shows that it is done instead of asking again.
    page = web.get(link(debtor.id)).get_data(as_text=True)
    assert "Listo: no le enviaremos más correos." in page and "<form" not in page


def test_a_debtor_already_opted_out_of_everything_gets_no_second_record(
    web: FlaskClient, make_debtor: Callable[..., Debtor], db: Database
) -> None:
    debtor = make_debtor()
    with db.session() as session:
        session.add(ConsentOptOut(debtor_id=debtor.id, channel="all", source="debtor"))
        session.commit()

    assert "<form" not in web.get(link(debtor.id)).get_data(as_text=True)
    assert web.post(link(debtor.id), **ONE_CLICK).status_code == 200

    assert [opt_out.channel for opt_out in opt_outs(db)] == ["all"]
    assert audit_events(db) == []


def test_a_revoked_opt_out_does_not_count(web: FlaskClient, make_debtor: Callable[..., Debtor], db: Database) -> None:
    debtor = make_debtor()
    with db.session() as session:
        session.add(ConsentOptOut(debtor_id=debtor.id, channel="email", source="debtor", revoked_at=debtor.created_at))
        session.commit()

    web.post(link(debtor.id), **ONE_CLICK)

    assert sorted(opt_out.source for opt_out in opt_outs(db)) == ["debtor", "unsubscribe_link"]


@pytest.mark.parametrize(
    "path",
    [
        lambda debtor_id: link(debtor_id, secret="someone-elses-secret"),  # forged
        lambda debtor_id: link(debtor_id)[:-2],  # tampered
        lambda debtor_id: "/u/not-a-token",
        lambda debtor_id: link(debtor_id, channel="pigeon"),  # signed, but no channel of ours
    ],
)
def test_a_forged_or_broken_token_is_404_and_records_nothing(
    web: FlaskClient, make_debtor: Callable[..., Debtor], db: Database, path: Callable[[int], str]
) -> None:
    debtor = make_debtor()

    assert web.get(path(debtor.id)).status_code == 404
    assert web.post(path(debtor.id), **ONE_CLICK).status_code == 404

    assert opt_outs(db) == []


def test_a_genuine_token_for_a_deleted_debtor_is_404(web: FlaskClient, db: Database) -> None:
    assert web.get(link(987654)).status_code == 404
    assert web.post(link(987654), **ONE_CLICK).status_code == 404
    assert opt_outs(db) == []


def test_texts_are_escaped_on_the_page(
    web: FlaskClient, make_creditor: Callable[..., object], make_debtor: Callable[..., Debtor]
) -> None:
    creditor = make_creditor(name='Aguas <script>alert("x")</script>')
    debtor = make_debtor(creditor=creditor)

    page = web.get(link(debtor.id)).get_data(as_text=True)

    assert "<script>" not in page
    assert "Aguas &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
