"""The first end-to-end slice: a debtor opens the portal link and chats with the bot."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import func, select

from bot.models import Message, Outbox
from bot.services import Services


def portal_path(services: Services, debtor_id: int, days: int = 30) -> str:
    token, _ = services.portal.issue(debtor_id, timedelta(days=days), now=services.clock())
    return f"/p/{token}"


def test_spanish_debtor_is_greeted_with_balance_and_due_date_in_chilean_format(client, services, make_debtor):
    debtor = make_debtor(invoices=[{"number": "F-1", "amount": "1234567", "due_date": date(2026, 12, 5)}])
    response = client.post(portal_path(services, debtor.id) + "/chat", json={"text": "hola"})
    assert response.status_code == 200
    [reply] = response.get_json()["replies"]
    assert reply["text"] == (
        "Hola Ana, le escribe Aguas del Valle. Su saldo pendiente es de $1.234.567 "
        "con vencimiento el 5 de diciembre de 2026. ¿En qué le puedo ayudar?"
    )


def test_english_debtor_gets_english_with_two_decimal_dollars(client, services, make_creditor, make_debtor):
    creditor = make_creditor(slug="acme", name="Acme Power", country="US", currency="USD", default_locale="en-US")
    debtor = make_debtor(
        creditor=creditor,
        name="John Smith",
        phone="+1 415 555 2671",
        locale="en-US",
        invoices=[
            {"number": "A-2", "amount": "80.25", "due_date": date(2027, 1, 10)},
            {"number": "A-1", "amount": "40.00", "due_date": date(2026, 12, 1)},
        ],
    )
    response = client.post(portal_path(services, debtor.id) + "/chat", json={"text": "hi"})
    [reply] = response.get_json()["replies"]
    assert reply["text"] == (
        "Hello John, this is Acme Power. Your outstanding balance is $120.25, due on December 1, 2026. "
        "How can I help you?"
    )


def test_chat_stores_both_messages_and_no_outbox_row_for_webchat(client, services, make_debtor, db):
    debtor = make_debtor()
    client.post(portal_path(services, debtor.id) + "/chat", json={"text": "hola"})
    with db.session() as session:
        directions = session.scalars(select(Message.direction).order_by(Message.id)).all()
        assert directions == ["in", "out"]
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0


def test_same_client_message_id_is_answered_once(client, services, make_debtor, db):
    debtor = make_debtor()
    path = portal_path(services, debtor.id) + "/chat"
    first = client.post(path, json={"text": "hola", "id": "abc123"}).get_json()
    second = client.post(path, json={"text": "hola", "id": "abc123"}).get_json()
    assert len(first["replies"]) == 1 and first["duplicate"] is False
    assert second == {"replies": [], "duplicate": True}
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 2


def test_portal_page_shows_balance_and_invoices_in_debtor_locale(client, services, make_debtor):
    debtor = make_debtor()
    response = client.get(portal_path(services, debtor.id))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<html lang="es">' in page
    assert "Su cuenta con Aguas del Valle" in page
    assert "$45.990" in page and "F-1" in page
    assert ">Pagar</a>" in page


def test_tampered_token_is_404_and_stores_nothing(client, services, make_debtor, db):
    debtor = make_debtor()
    path = portal_path(services, debtor.id)
    response = client.post(path[:-2] + "xx/chat", json={"text": "hola"})
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    assert client.get(path[:-2] + "xx").status_code == 404
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0


def test_expired_token_is_410(client, services, make_debtor, clock):
    debtor = make_debtor()
    path = portal_path(services, debtor.id, days=1)
    clock.advance(days=2)
    response = client.post(path + "/chat", json={"text": "hola"})
    assert response.status_code == 410
    assert client.get(path).status_code == 410


def test_bad_chat_bodies_get_4xx_with_reason(client, services, make_debtor, db):
    debtor = make_debtor()
    path = portal_path(services, debtor.id) + "/chat"
    not_json = client.post(path, data="hola", content_type="text/plain")
    assert not_json.status_code == 400
    empty = client.post(path, json={"text": "   "})
    assert empty.status_code == 422
    assert empty.get_json()["fields"][0]["field"] == "text"
    extra = client.post(path, json={"text": "hola", "admin": True})
    assert extra.status_code == 422
    too_long = client.post(path, json={"text": "x" * 2001})
    assert too_long.status_code == 422
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0


def test_payment_link_from_the_chat_leads_to_the_portal_until_it_expires(client, services, make_debtor, clock):
    debtor = make_debtor()
    reply = client.post(portal_path(services, debtor.id) + "/chat", json={"text": "quiero pagar"}).get_json()
    [text] = [r["text"] for r in reply["replies"]]
    short = text.rsplit(" ", 1)[-1]
    assert short.startswith("https://cobrabot.example/l/")
    path = short.removeprefix("https://cobrabot.example")
    response = client.get(path)
    assert response.status_code == 302 and response.headers["Location"].startswith("/p/")
    assert client.get(response.headers["Location"]).status_code == 200
    clock.advance(days=8)
    assert client.get(path).status_code == 410
    assert client.get("/l/nope").status_code == 404


def test_messages_sent_through_the_outbox_reach_the_open_portal_by_polling(client, services, make_debtor, db):
    from bot.models import Conversation, Message, Outbox
    from channels.webchat import WebChat

    debtor = make_debtor()
    path = portal_path(services, debtor.id)
    client.post(path + "/chat", json={"text": "hola"})
    with db.session() as session:
        conversation = session.scalars(select(Conversation)).one()
        note = Message(
            conversation_id=conversation.id,
            debtor_id=debtor.id,
            direction="out",
            channel="webchat",
            body="Hola Ana, soy Carla del equipo de cobranza.",
            delivery_status="queued",
        )
        session.add(note)
        session.flush()
        session.add(
            Outbox(message_id=note.id, channel="webchat", initiated_by="agent", next_attempt_at=services.clock())
        )
        session.commit()
    services.registry.register(WebChat())
    assert client.get(path + "/messages?after=0").get_json() == {"messages": []}  # not dispatched yet
    assert services.dispatcher.run_once().sent == 1
    body = client.get(path + "/messages?after=0").get_json()
    assert [m["text"] for m in body["messages"]] == ["Hola Ana, soy Carla del equipo de cobranza."]
    assert client.get(path + f"/messages?after={body['messages'][0]['id']}").get_json() == {"messages": []}
    assert client.get(path + "/messages?after=abc").status_code == 400
