"""A FAQ reply records the knowledge document it quoted, and the console shows it beside the message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from sqlalchemy import select

from bot.domain import InboundMessage
from bot.models import Conversation, Creditor, Debtor, Message
from bot.services import Services
from bot.store import Database
from tests.admin import add_agent, console_app, sign_in
from tests.conftest import FixedClock

QUESTIONS = {
    "es-CL": ("dónde puedo ver mis boletas?", "Dónde ver sus boletas, facturas y saldo"),
    "en": ("where can I see my invoices?", None),
}


def _ask(services: Services, debtor: Debtor, text: str, clock: FixedClock) -> None:
    message = InboundMessage("webchat", f"portal:{debtor.id}", text, f"faq-{debtor.id}", received_at=clock())
    services.conversations.receive(message, debtor.id, verified=True)


def _faq_reply(db: Database, debtor_id: int) -> Message:
    with db.session() as session:
        return session.scalars(
            select(Message).where(
                Message.debtor_id == debtor_id, Message.direction == "out", Message.template_key == "faq_answer"
            )
        ).one()


def test_a_faq_reply_stores_its_source_in_spanish_and_english(
    services: Services,
    make_creditor: Callable[..., Creditor],
    make_debtor: Callable[..., Debtor],
    clock: FixedClock,
    db: Database,
) -> None:
    creditor = make_creditor()
    spanish = make_debtor(creditor=creditor, locale="es-CL")
    english = make_debtor(
        creditor=creditor,
        external_ref="C-2",
        phone="+56961234568",
        locale="en",
        invoices=[{"number": "F-2", "amount": "45990", "due_date": date(2026, 12, 5)}],
    )
    _ask(services, spanish, QUESTIONS["es-CL"][0], clock)
    _ask(services, english, QUESTIONS["en"][0], clock)

    assert _faq_reply(db, spanish.id).knowledge_source == QUESTIONS["es-CL"][1]
    english_source = _faq_reply(db, english.id).knowledge_source
    assert english_source and english_source != QUESTIONS["es-CL"][1]  # the English document's own title


def test_the_console_shows_the_source_beside_the_reply(
    services: Services, make_debtor: Callable[..., Debtor], clock: FixedClock, db: Database
) -> None:
    debtor = make_debtor(locale="es-CL")
    _ask(services, debtor, QUESTIONS["es-CL"][0], clock)
    with db.session() as session:
        conversation = session.scalars(select(Conversation).where(Conversation.debtor_id == debtor.id)).one()
        conversation.mode = "human"
        session.commit()
    add_agent(db, "ana@cobrabot.example")
    web = console_app(services).test_client()
    sign_in(web, "ana@cobrabot.example")

    page = web.get(f"/admin/conversations/{conversation.id}").get_data(as_text=True)
    assert f"Source: {QUESTIONS['es-CL'][1]}" in page
    polled = web.get(f"/admin/conversations/{conversation.id}/messages?after=0").get_json()
    assert QUESTIONS["es-CL"][1] in [row.get("source") for row in polled["messages"]]
