"""Whole conversations written as YAML (tests/bot/transcripts/*.yaml), run through the real inbound path:
offline NLU, engine, flow, effects and database. Each turn says what the debtor writes and what the bot
must say (template keys, text) or do; the file's `expect` block checks what was stored."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from bot.domain import InboundMessage
from bot.models import Case, ConsentOptOut, Conversation, Invoice, Message, PaymentLink, PaymentPlan, PromiseToPay
from bot.services import Services

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts").glob("*.yaml"))


def test_there_are_at_least_thirty_transcripts_in_both_languages():
    locales = [yaml.safe_load(path.read_text())["locale"][:2] for path in TRANSCRIPTS]
    assert len(TRANSCRIPTS) >= 30
    assert locales.count("es") >= 15 and locales.count("en") >= 10


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[path.stem for path in TRANSCRIPTS])
def test_transcript(path: Path, services: Services, make_creditor, make_debtor, clock, db):
    script = yaml.safe_load(path.read_text())
    if "now" in script:
        clock.now = datetime.fromisoformat(script["now"])
    debtor = _debtor(script, make_creditor, make_debtor)
    channel = script.get("channel", "sms")
    sender = "portal" if channel == "webchat" else debtor.phone
    for number, turn in enumerate(script["turns"], start=1):
        message = InboundMessage(
            channel, sender, turn["debtor"], provider_message_id=f"{path.stem}-{number}", received_at=clock()
        )
        received = services.conversations.receive(message, debtor.id, verified=script.get("verified", False))
        _check_turn(path.stem, number, turn, received.replies, db)
        clock.advance(minutes=turn.get("wait_minutes", 1))
    _check_expectations(script.get("expect", {}), debtor.id, db)


def _debtor(script: dict[str, Any], make_creditor, make_debtor):
    creditor_fields = script.get("creditor", {})
    locale = script["locale"]
    if locale.startswith("en"):
        creditor_fields = {
            "slug": "acme",
            "name": "Acme Power",
            "country": "US",
            "currency": "USD",
            "default_locale": "en-US",
            "timezone": "America/New_York",
        } | creditor_fields
        defaults = {
            "name": "John Smith",
            "phone": "+1 415 555 2671",
            "locale": locale,
            "timezone": "America/New_York",
            "invoices": [{"number": "A-1", "amount": "240.00", "due_date": "2026-11-15"}],
        }
    else:
        defaults = {"locale": locale, "invoices": [{"number": "F-1", "amount": "120000", "due_date": "2026-11-15"}]}
    creditor = make_creditor(**creditor_fields)
    return make_debtor(creditor=creditor, **(defaults | script.get("debtor", {})))


def _check_turn(name: str, number: int, turn: dict[str, Any], replies, db) -> None:
    where = f"{name} turn {number} ({turn['debtor']!r})"
    keys = [reply.template_key for reply in replies]
    text = "\n".join(reply.text for reply in replies)
    if "bot" in turn:
        assert keys == turn["bot"], f"{where}: bot said {keys}\n{text}"
    for expected in turn.get("says", []):
        assert expected in text, f"{where}: expected {expected!r} in:\n{text}"
    for unexpected in turn.get("never_says", []):
        assert unexpected not in text, f"{where}: must not say {unexpected!r}:\n{text}"
    if "intent" in turn:
        with db.session() as session:
            intent = session.scalars(
                select(Message.intent).where(Message.direction == "in").order_by(Message.id.desc())
            ).first()
        assert intent == turn["intent"], f"{where}: understood {intent}"


def _check_expectations(expect: dict[str, Any], debtor_id: int, db) -> None:
    with db.session() as session:
        counts = {
            "promises": PromiseToPay,
            "plans": PaymentPlan,
            "payment_links": PaymentLink,
            "opt_outs": ConsentOptOut,
            "cases": Case,
        }
        for key, model in counts.items():
            if key in expect:
                count = session.scalar(select(func.count()).select_from(model).where(model.debtor_id == debtor_id))
                assert count == expect[key], f"expected {expect[key]} {key}, found {count}"
        if "case_kinds" in expect:
            kinds = session.scalars(select(Case.kind).where(Case.debtor_id == debtor_id).order_by(Case.id)).all()
            assert kinds == expect["case_kinds"]
        if "opt_out_channels" in expect:
            channels = session.scalars(select(ConsentOptOut.channel).where(ConsentOptOut.debtor_id == debtor_id))
            assert sorted(channels) == sorted(expect["opt_out_channels"])
        if "mode" in expect:
            mode = session.scalars(
                select(Conversation.mode).where(Conversation.debtor_id == debtor_id).order_by(Conversation.id.desc())
            ).first()
            assert mode == expect["mode"]
        if "invoice_status" in expect:
            statuses = set(session.scalars(select(Invoice.status).where(Invoice.debtor_id == debtor_id)))
            assert statuses == {expect["invoice_status"]}
        if "promise" in expect:
            promise = session.scalars(select(PromiseToPay).where(PromiseToPay.debtor_id == debtor_id)).one()
            assert str(promise.promised_date) == expect["promise"]["date"]
            assert promise.amount_minor == expect["promise"]["amount_minor"]
        if "plan_installments" in expect:
            plan = session.scalars(select(PaymentPlan).where(PaymentPlan.debtor_id == debtor_id)).one()
            assert plan.installment_count == expect["plan_installments"]
            paid_in = plan.down_payment_minor + sum(i.amount_minor for i in plan.installments)
            assert paid_in == plan.total_minor - plan.discount_minor
