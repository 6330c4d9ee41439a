"""Telegram webhook end to end: the secret header, linking a chat by a signed /start token or a shared contact."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.app import create_app
from bot.config import load_settings
from bot.models import Debtor, Message
from bot.services import bootstrap
from channels import build_registry
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET

SECRET = "tg-webhook-secret"


@pytest.fixture
def telegram(db, clock, standin, database_url):
    settings = load_settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        public_url=TEST_PUBLIC_URL,
        telegram_bot_token="123456:TEST",
        telegram_secret=SECRET,
        telegram_api_url=standin.url,
    )
    services = bootstrap(settings, database=db, clock=clock, registry=build_registry(settings))
    return services, create_app(services=services).test_client()


def update(update_id: int, text: str, chat_id: int = 777, **message: object) -> dict[str, object]:
    sender = {"id": chat_id, "is_bot": False, "first_name": "Ana"}
    body = {
        "message_id": update_id,
        "date": 1795000000,
        "chat": {"id": chat_id, "type": "private"},
        "from": sender,
        "text": text,
    } | message
    return {"update_id": update_id, "message": body}


def post(client, body, secret=SECRET):
    return client.post("/webhooks/telegram", json=body, headers={"X-Telegram-Bot-Api-Secret-Token": secret})


def test_a_signed_start_link_ties_the_chat_to_the_debtor_who_must_still_verify(telegram, make_debtor, db):
    services, client = telegram
    debtor = make_debtor()
    token = services.telegram_links.token(debtor.id)
    assert post(client, update(1, f"/start {token}")).status_code == 200
    with db.session() as session:
        assert session.get(Debtor, debtor.id).telegram_chat_id == "777"
        assert session.scalars(select(Message.template_key).where(Message.direction == "out")).all() == [
            "verify_identity"
        ]


def test_a_forged_start_token_links_nothing(telegram, make_debtor, db):
    _services, client = telegram
    debtor = make_debtor()
    assert post(client, update(1, f"/start {debtor.id}_forgedmac")).status_code == 200
    with db.session() as session:
        assert session.get(Debtor, debtor.id).telegram_chat_id is None
        assert session.scalars(select(Message)).all() == []


def test_sharing_ones_own_contact_links_by_phone(telegram, make_debtor, db):
    _services, client = telegram
    debtor = make_debtor()
    contact = {"phone_number": "56961234567", "first_name": "Ana", "user_id": 777}
    body = update(2, "", contact=contact)
    del body["message"]["text"]
    assert post(client, body).status_code == 200
    with db.session() as session:
        assert session.get(Debtor, debtor.id).telegram_chat_id == "777"


def test_wrong_secret_is_403(telegram, make_debtor, db):
    _services, client = telegram
    assert post(client, update(1, "hola"), secret="nope").status_code == 403


def test_the_same_update_twice_is_one_turn(telegram, make_debtor, db):
    services, client = telegram
    debtor = make_debtor()
    token = services.telegram_links.token(debtor.id)
    post(client, update(5, f"/start {token}"))
    post(client, update(5, f"/start {token}"))
    with db.session() as session:
        assert len(session.scalars(select(Message).where(Message.direction == "in")).all()) == 1


def test_a_button_press_is_answered_in_the_webhook_response(telegram, make_debtor, db):
    services, client = telegram
    debtor = make_debtor()
    post(client, update(1, f"/start {services.telegram_links.token(debtor.id)}"))
    press = {
        "update_id": 9,
        "callback_query": {
            "id": "cbq-1",
            "from": {"id": 777, "is_bot": False, "first_name": "Ana"},
            "chat_instance": "1",
            "data": "5678",
            "message": {"message_id": 3, "date": 1795000000, "chat": {"id": 777, "type": "private"}, "text": "?"},
        },
    }
    response = post(client, press)
    assert response.get_json() == {"method": "answerCallbackQuery", "callback_query_id": "cbq-1"}
