"""Inbound email end to end: the shared-secret header, the debtor found by address, auto-replies ignored."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.app import create_app
from bot.config import load_settings
from bot.models import Message
from bot.services import bootstrap
from channels import build_registry
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET

SECRET = "email-hook-secret"
MAIL = (
    "From: Ana Perez <Ana@Example.cl>\r\nTo: cobranza@aguas.example\r\nSubject: Re: su cuenta\r\n"
    "Message-ID: <reply-1@example.cl>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    "quiero pagar\r\n\r\nEl lun, 23 nov 2026, Aguas escribió:\r\n> Hola Ana\r\n"
)


@pytest.fixture
def email_client(db, clock, database_url):
    settings = load_settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        public_url=TEST_PUBLIC_URL,
        smtp_url="smtp://127.0.0.1:2525",
        email_from="cobranza@aguas.example",
        email_webhook_secret=SECRET,
    )
    services = bootstrap(settings, database=db, clock=clock, registry=build_registry(settings))
    return create_app(services=services).test_client()


def post(client, raw: str, secret: str = SECRET):
    return client.post(
        "/webhooks/email",
        data=raw.encode(),
        headers={"X-Cobrabot-Email-Secret": secret, "Content-Type": "message/rfc822"},
    )


def test_a_reply_by_email_reaches_the_conversation_without_the_quoted_history(email_client, make_debtor, db):
    make_debtor()
    assert post(email_client, MAIL).status_code == 200
    with db.session() as session:
        inbound = session.scalars(select(Message).where(Message.direction == "in")).one()
        reply = session.scalars(select(Message).where(Message.direction == "out")).one()
    assert (inbound.body, inbound.provider_message_id) == ("quiero pagar", "reply-1@example.cl")
    assert reply.template_key == "verify_identity"


def test_wrong_secret_is_403_and_auto_replies_are_ignored(email_client, make_debtor, db):
    make_debtor()
    assert post(email_client, MAIL, secret="nope").status_code == 403
    auto = MAIL.replace("Subject: Re: su cuenta", "Subject: Fuera de la oficina\r\nAuto-Submitted: auto-replied")
    assert post(email_client, auto).status_code == 200
    with db.session() as session:
        assert session.scalars(select(Message)).all() == []


def test_a_long_message_id_is_stored_and_one_past_a_header_line_is_refused(email_client, make_debtor, db):
    """Regression: a Message-ID over 128 characters answered 500 on PostgreSQL (the column was varchar(128))."""
    make_debtor()
    long_id = "x" * 300 + "@mail.example.cl"
    assert post(email_client, MAIL.replace("reply-1@example.cl", long_id)).status_code == 200
    too_long = "x" * 1000 + "@mail.example.cl"
    refused = post(email_client, MAIL.replace("reply-1@example.cl", too_long))

    assert refused.status_code == 400 and "message id longer than 998" in refused.get_json()["message"]
    with db.session() as session:
        stored = session.scalars(select(Message.provider_message_id).where(Message.direction == "in")).all()
    assert stored == [long_id]
