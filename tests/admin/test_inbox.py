"""The handoff inbox and the conversation page: listing, polling, claim, reply, notes, resolve, back to bot."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bot.config import load_settings
from bot.models import AuditEvent, ConsentOptOut, Conversation, Debtor, Message, Outbox
from bot.services import Services, bootstrap
from bot.store import Database
from flows.loader import default_flow
from tests.admin import add_agent, console_app, csrf_token, handed_off, sign_in
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET, FixedClock

TEMPLATES = {"greeting_balance": {"es": "HXgreeting"}}


@pytest.fixture
def agent_id(db: Database) -> int:
    return add_agent(db, "ana@cobrabot.example")


@pytest.fixture
def web(console: Flask, agent_id: int) -> FlaskClient:
    client = console.test_client()
    assert sign_in(client, "ana@cobrabot.example").status_code == 302
    return client


@pytest.fixture
def debtor(make_debtor: Callable[..., Debtor]) -> Debtor:
    return make_debtor()


def _post(web: FlaskClient, path: str, **form: object) -> int:
    return web.post(path, data={"csrf_token": csrf_token(web, "/admin/inbox"), **form}).status_code


def _conversation(db: Database, conversation_id: int) -> Conversation:
    with db.session() as session:
        return session.get_one(Conversation, conversation_id)


def _audit(db: Database, action: str) -> list[AuditEvent]:
    with db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_inbox_lists_handoffs_with_waiting_time_and_sla(
    web: FlaskClient, db: Database, clock: FixedClock, make_debtor: Callable[..., Debtor], debtor: Debtor
) -> None:
    fresh = handed_off(db, debtor, clock(), waited_minutes=30)
    late_debtor = make_debtor(
        creditor=debtor.creditor, external_ref="C-2", name="Bruno Díaz", phone="+56961234568", invoices=[]
    )
    late = handed_off(db, late_debtor, clock(), waited_minutes=5 * 60)
    with db.session() as session:
        session.add(Conversation(debtor_id=debtor.id, channel="email", address="ana@example.cl", mode="bot"))
        session.commit()

    page = web.get("/admin/inbox").get_data(as_text=True)
    assert "Ana María Pérez" in page and "Bruno Díaz" in page
    assert "30 min" in page and "5 h 00 min" in page and "overdue" in page

    data = web.get("/admin/inbox.json").get_json()
    rows = {row["id"]: row for row in data["conversations"]}
    assert list(rows) == [late, fresh]  # longest waiting first; the bot's conversation is not listed
    assert rows[late]["overdue"] is True and rows[fresh]["overdue"] is False
    assert rows[fresh]["waiting_seconds"] == 30 * 60
    assert rows[fresh] | {"handoff_at": None, "sla_due_at": None} == {
        "id": fresh,
        "debtor_name": "Ana María Pérez",
        "channel": "sms",
        "reason": "asked_for_human",
        "handoff_at": None,
        "waiting_seconds": 1800,
        "waiting": "30 min",
        "sla_due_at": None,
        "overdue": False,
        "assigned_agent_id": None,
        "assigned_agent_name": None,
    }


def test_conversation_page_shows_the_thread_with_media_links(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    conversation_id = handed_off(db, debtor, clock())
    with db.session() as session:
        session.add(
            Message(
                conversation_id=conversation_id,
                debtor_id=debtor.id,
                direction="in",
                channel="sms",
                body="<b>comprobante</b>",
                media=["https://media.example/receipt.jpg", "javascript:alert(1)"],
            )
        )
        session.commit()
    page = web.get(f"/admin/conversations/{conversation_id}").get_data(as_text=True)
    assert page.index("quiero hablar con una persona") < page.index("Le comunico con un ejecutivo.")
    assert 'href="https://media.example/receipt.jpg"' in page
    assert "javascript:alert" not in page
    assert "&lt;b&gt;comprobante&lt;/b&gt;" in page  # escaped, never rendered as markup
    assert web.get("/admin/conversations/999999").status_code == 404


def test_messages_endpoint_returns_what_came_after(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    conversation_id = handed_off(db, debtor, clock())
    everything = web.get(f"/admin/conversations/{conversation_id}/messages").get_json()["messages"]
    assert [m["direction"] for m in everything] == ["in", "out"]
    newer = web.get(f"/admin/conversations/{conversation_id}/messages?after={everything[0]['id']}").get_json()
    assert [m["body"] for m in newer["messages"]] == ["Le comunico con un ejecutivo."]
    assert newer["mode"] == "human"
    assert web.get(f"/admin/conversations/{conversation_id}/messages?after=x").status_code == 400


def test_claim_assigns_to_me_and_another_agent_cannot_take_it(
    web: FlaskClient, console: Flask, db: Database, clock: FixedClock, debtor: Debtor, agent_id: int
) -> None:
    conversation_id = handed_off(db, debtor, clock())
    assert _post(web, f"/admin/conversations/{conversation_id}/claim") == 303
    assert _conversation(db, conversation_id).assigned_agent_id == agent_id
    [event] = _audit(db, "conversation.claimed")
    assert event.actor == f"agent:{agent_id}" and event.subject_id == str(conversation_id)
    assert web.get("/admin/inbox.json").get_json()["conversations"][0]["assigned_agent_name"] == "Ana"

    add_agent(db, "bea@cobrabot.example")
    other = console.test_client()
    sign_in(other, "bea@cobrabot.example")
    assert _post(other, f"/admin/conversations/{conversation_id}/claim") == 403
    assert _post(other, f"/admin/conversations/{conversation_id}/reply", text="hola") == 403
    assert _conversation(db, conversation_id).assigned_agent_id == agent_id


def test_reply_queues_a_message_and_an_outbox_row(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor, agent_id: int
) -> None:
    conversation_id = handed_off(db, debtor, clock())
    assert _post(web, f"/admin/conversations/{conversation_id}/reply", text="  Hola Ana, soy Ana del equipo. ") == 303
    with db.session() as session:
        message = session.scalars(select(Message).where(Message.sent_by_agent_id == agent_id)).one()
        outbox = session.scalars(select(Outbox).where(Outbox.message_id == message.id)).one()
    assert (message.direction, message.channel, message.body) == ("out", "sms", "Hola Ana, soy Ana del equipo.")
    assert message.conversation_id == conversation_id and message.delivery_status == "queued"
    assert (outbox.initiated_by, outbox.channel, outbox.status) == ("agent", "sms", "pending")
    assert _conversation(db, conversation_id).assigned_agent_id == agent_id  # replying takes the conversation
    [event] = _audit(db, "message.queued_by_agent")
    assert event.actor == f"agent:{agent_id}" and event.subject_id == str(message.id)
    thread = web.get(f"/admin/conversations/{conversation_id}/messages").get_json()["messages"]
    assert thread[-1]["sent_by_agent_id"] == agent_id


def test_empty_reply_is_refused(web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor) -> None:
    conversation_id = handed_off(db, debtor, clock())
    assert _post(web, f"/admin/conversations/{conversation_id}/reply", text="   ") == 303
    with db.session() as session:
        assert session.scalars(select(Outbox)).first() is None


@pytest.mark.parametrize("channel", ["sms", "all"])
def test_reply_is_refused_when_the_debtor_opted_out(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor, channel: str
) -> None:
    conversation_id = handed_off(db, debtor, clock())
    with db.session() as session:
        session.add(ConsentOptOut(debtor_id=debtor.id, channel=channel, source="keyword"))
        session.commit()
    page = web.get(f"/admin/conversations/{conversation_id}").get_data(as_text=True)
    assert "opted out of sms" in page and 'id="reply-text"' not in page
    response = web.post(
        f"/admin/conversations/{conversation_id}/reply",
        data={"csrf_token": csrf_token(web, "/admin/inbox"), "text": "hola"},
        follow_redirects=True,
    )
    assert "nothing was queued" in response.get_data(as_text=True)
    with db.session() as session:
        assert session.scalars(select(Outbox)).first() is None
        assert session.scalars(select(Message).where(Message.sent_by_agent_id.is_not(None))).first() is None


def test_note_is_kept_in_the_audit_trail_and_shown(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor, agent_id: int
) -> None:
    conversation_id = handed_off(db, debtor, clock())
    assert _post(web, f"/admin/conversations/{conversation_id}/notes", text="Pidió llamar después de las 18 h") == 303
    [note] = _audit(db, "note.added")
    assert note.data["text"] == "Pidió llamar después de las 18 h" and note.actor == f"agent:{agent_id}"
    assert note.subject_type == "conversation" and note.subject_id == str(conversation_id)
    assert "Pidió llamar después de las 18 h" in web.get(f"/admin/conversations/{conversation_id}").get_data(
        as_text=True
    )


def test_resolve_closes_and_leaves_the_inbox(web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor) -> None:
    conversation_id = handed_off(db, debtor, clock())
    assert _post(web, f"/admin/conversations/{conversation_id}/resolve") == 303
    assert _conversation(db, conversation_id).mode == "closed"
    assert web.get("/admin/inbox.json").get_json()["conversations"] == []
    assert len(_audit(db, "conversation.resolved")) == 1
    assert _post(web, f"/admin/conversations/{conversation_id}/reply", text="hola") == 303
    with db.session() as session:
        assert session.scalars(select(Outbox)).first() is None


def test_return_to_bot_restarts_the_flow_and_keeps_identity(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    conversation_id = handed_off(db, debtor, clock())
    verified_at = _conversation(db, conversation_id).identity_verified_at
    assert _post(web, f"/admin/conversations/{conversation_id}/return-to-bot") == 303
    conversation = _conversation(db, conversation_id)
    assert (conversation.mode, conversation.node, conversation.slots) == ("bot", "menu", {})
    assert conversation.identity_verified_at == verified_at and conversation.assigned_agent_id is None
    [event] = _audit(db, "conversation.returned_to_bot")
    assert event.data["node"] == "menu"


def test_unverified_conversation_goes_back_to_the_flow_start(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    conversation_id = handed_off(db, debtor, clock())
    with db.session() as session:
        session.get_one(Conversation, conversation_id).identity_verified_at = None
        session.commit()
    _post(web, f"/admin/conversations/{conversation_id}/return-to-bot")
    assert _conversation(db, conversation_id).node == default_flow("collections").start


@pytest.fixture
def whatsapp_services(database_url: str, db: Database, clock: FixedClock) -> Services:
    settings = load_settings(
        database_url=database_url, secret_key=TEST_SECRET, public_url=TEST_PUBLIC_URL, whatsapp_templates=TEMPLATES
    )
    return bootstrap(settings, database=db, clock=clock)


def test_closed_whatsapp_window_allows_only_a_template(
    whatsapp_services: Services, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    add_agent(db, "ana@cobrabot.example")
    web = console_app(whatsapp_services).test_client()
    sign_in(web, "ana@cobrabot.example")
    conversation_id = handed_off(db, debtor, clock(), channel="whatsapp", waited_minutes=25 * 60)
    page = web.get(f"/admin/conversations/{conversation_id}").get_data(as_text=True)
    assert "24-hour window is closed" in page and '<option value="greeting_balance">' in page

    assert _post(web, f"/admin/conversations/{conversation_id}/reply", text="hola") == 303
    assert _post(web, f"/admin/conversations/{conversation_id}/reply", template_key="not_approved") == 303
    with db.session() as session:
        assert session.scalars(select(Outbox)).first() is None

    assert _post(web, f"/admin/conversations/{conversation_id}/reply", template_key="greeting_balance") == 303
    with db.session() as session:
        message = session.scalars(select(Message).where(Message.sent_by_agent_id.is_not(None))).one()
        outbox = session.scalars(select(Outbox)).one()
    assert message.template_key == "greeting_balance" and message.channel == "whatsapp"
    assert "Ana María Pérez" in message.body and outbox.initiated_by == "agent"


def test_open_whatsapp_window_allows_free_text(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor
) -> None:
    conversation_id = handed_off(db, debtor, clock(), channel="whatsapp", waited_minutes=60)
    assert "24-hour window is closed" not in web.get(f"/admin/conversations/{conversation_id}").get_data(as_text=True)
    assert _post(web, f"/admin/conversations/{conversation_id}/reply", text="hola") == 303
    with db.session() as session:
        assert session.scalars(select(Outbox)).one().channel == "whatsapp"
    clock.advance(hours=24)
    assert _post(web, f"/admin/conversations/{conversation_id}/reply", text="¿sigue ahí?") == 303
    with db.session() as session:
        assert len(session.scalars(select(Outbox)).all()) == 1


def test_inbox_page_loads_its_script_and_styles(web: FlaskClient) -> None:
    page = web.get("/admin/inbox").get_data(as_text=True)
    assert "/admin/static/inbox.js" in page and "/admin/static/admin.css" in page
    assert web.get("/admin/static/inbox.js").status_code == 200
    assert web.get("/admin/static/admin.css").status_code == 200
