"""Debtor 360: search, the whole account on one page (money in the debtor's locale, one timeline of every
channel, newest first), and the account actions: payment link, pause collection, opt-out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bot.audit import record
from bot.models import (
    AuditEvent,
    ConsentOptOut,
    Debtor,
    Installment,
    Invoice,
    Message,
    Outbox,
    Payment,
    PaymentAllocation,
    PaymentLink,
    PaymentPlan,
    PromiseToPay,
)
from bot.store import Database
from tests.admin import add_agent, csrf_token, sign_in
from tests.conftest import TEST_PUBLIC_URL, FixedClock


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
    return make_debtor(locale="es-CL", channel_preference=["sms", "email"])


def _post(client: FlaskClient, path: str, **form: object) -> int:
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/debtors"), **form}).status_code


def _audit(db: Database, action: str) -> list[AuditEvent]:
    with db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _fill_account(db: Database, debtor: Debtor, now: datetime) -> None:
    """A plan with installments, a promise, a payment split over an invoice and credit, messages on two channels."""
    with db.session() as session:
        invoice = session.scalars(select(Invoice).where(Invoice.debtor_id == debtor.id)).one()
        plan = PaymentPlan(debtor_id=debtor.id, status="active", currency="CLP", total_minor=30000, installment_count=2)
        plan.installments = [
            Installment(seq=1, due_date=date(2026, 12, 10), amount_minor=15000),
            Installment(seq=2, due_date=date(2027, 1, 10), amount_minor=15000),
        ]
        session.add(plan)
        session.add(
            PromiseToPay(debtor_id=debtor.id, amount_minor=7000, currency="CLP", promised_date=date(2026, 12, 1))
        )
        payment = Payment(creditor_id=debtor.creditor_id, debtor_id=debtor.id, provider="bank",
                          provider_payment_id="p1", amount_minor=6000, currency="CLP", received_at=now)  # fmt: skip
        payment.allocations = [
            PaymentAllocation(invoice_id=invoice.id, amount_minor=5000),
            PaymentAllocation(amount_minor=1000),
        ]
        session.add(payment)
        for minutes, channel, body in ((30, "sms", "mensaje antiguo por sms"), (5, "email", "correo más reciente")):
            session.add(Message(debtor_id=debtor.id, direction="in", channel=channel, body=body,
                                created_at=now - timedelta(minutes=minutes)))  # fmt: skip
        session.add(ConsentOptOut(debtor_id=debtor.id, channel="whatsapp", source="keyword", created_at=now))
        stored = session.get_one(Debtor, debtor.id)
        stored.risk_score, stored.risk_factors, stored.segment = (
            0.73,
            {"days_past_due": 40, "broken_promises": 2},
            "high",
        )
        record(session, "system", "debtor.scored", stored, score=0.73)
        session.commit()


@pytest.mark.parametrize("role", ["agent", "manager", "admin"])
def test_debtor_page_shows_the_whole_account_for_every_role(
    console: Flask, db: Database, clock: FixedClock, debtor: Debtor, role: str
) -> None:
    _fill_account(db, debtor, clock())
    add_agent(db, f"{role}@cobrabot.example", role=role)
    client = console.test_client()
    sign_in(client, f"{role}@cobrabot.example")
    page = client.get(f"/admin/debtors/{debtor.id}").get_data(as_text=True)

    assert "Ana María Pérez" in page and "F-1" in page
    assert "$45.990" in page  # Babel money in the debtor's locale (es-CL: no decimals, dot thousands)
    assert "$15.000" in page and "$7.000" in page and "$6.000" in page  # installments, promise, payment
    assert "$5.000 → invoice" in page and "$1.000 → credit on account" in page
    assert page.index("correo más reciente") < page.index("mensaje antiguo por sms")  # one timeline, newest first
    assert "whatsapp · keyword" in page
    assert "0.73" in page and "days_past_due: 40" in page and "high" in page
    assert "debtor.scored" in page


def test_search_by_name_reference_phone_and_email(
    web: FlaskClient, make_debtor: Callable[..., Debtor], debtor: Debtor
) -> None:
    make_debtor(creditor=debtor.creditor, external_ref="C-2002", name="Bruno Díaz", phone="+56 9 6123 9999",
                email="bruno@example.cl", invoices=[])  # fmt: skip
    link = f"/admin/debtors/{debtor.id}"
    for query in ("maría", "C-1001", "6123 4567", "ANA@EXAMPLE"):
        page = web.get("/admin/debtors", query_string={"q": query}).get_data(as_text=True)
        assert link in page and "Bruno" not in page, query
    assert "No debtor matches" in web.get("/admin/debtors?q=%25").get_data(as_text=True)  # % is not a wildcard
    assert web.get("/admin/debtors").status_code == 200


def test_unknown_debtor_is_404(web: FlaskClient) -> None:
    assert web.get("/admin/debtors/999999").status_code == 404
    assert _post(web, "/admin/debtors/999999/payment-link") == 404
    assert _post(web, "/admin/debtors/999999/opt-out", channel="sms") == 404


def test_payment_link_for_the_balance_is_queued_to_the_debtor(
    web: FlaskClient, db: Database, clock: FixedClock, debtor: Debtor, agent_id: int
) -> None:
    assert _post(web, f"/admin/debtors/{debtor.id}/payment-link") == 303
    with db.session() as session:
        link = session.scalars(select(PaymentLink)).one()
        message = session.scalars(select(Message)).one()
        outbox = session.scalars(select(Outbox)).one()
    assert (link.purpose, link.amount_minor, link.currency) == ("settlement", 45990, "CLP")
    assert link.url == f"{TEST_PUBLIC_URL}/l/{link.short_code}"
    assert message.body == f"Aquí tiene su enlace de pago por $45.990: {link.url}"
    assert (message.channel, message.template_key, outbox.message_id) == ("sms", "payment_link_sent", message.id)
    [event] = _audit(db, "payment_link.sent_by_agent")
    assert event.actor == f"agent:{agent_id}" and event.subject_id == str(debtor.id)
    assert event.data["link_id"] == link.id and event.data["message_id"] == message.id


def test_payment_link_is_refused_when_the_debtor_cannot_be_reached(
    web: FlaskClient, db: Database, debtor: Debtor
) -> None:
    with db.session() as session:
        session.add(ConsentOptOut(debtor_id=debtor.id, channel="all", source="keyword"))
        session.commit()
    assert _post(web, f"/admin/debtors/{debtor.id}/payment-link") == 303
    with db.session() as session:  # the link and the message are one transaction: neither was kept
        assert session.scalars(select(PaymentLink)).all() == [] and session.scalars(select(Message)).all() == []
    assert _audit(db, "payment_link.sent_by_agent") == []


def test_pause_collection_until_a_date_in_the_debtors_time_zone(
    web: FlaskClient, db: Database, debtor: Debtor, agent_id: int
) -> None:
    assert _post(web, f"/admin/debtors/{debtor.id}/pause", until="2026-12-15") == 303
    with db.session() as session:
        paused = session.get_one(Debtor, debtor.id).collection_paused_until
    assert paused == datetime(2026, 12, 15, 3, 0, tzinfo=UTC)  # midnight in Santiago (UTC-3 in summer)
    [event] = _audit(db, "debtor.collection_paused")
    assert event.actor == f"agent:{agent_id}" and event.data["until"] == paused.isoformat()
    assert _post(web, f"/admin/debtors/{debtor.id}/pause", until="2020-01-01") == 303  # past: refused
    assert _post(web, f"/admin/debtors/{debtor.id}/pause", until="soon") == 400
    assert len(_audit(db, "debtor.collection_paused")) == 1


def test_record_an_opt_out_as_the_agent(web: FlaskClient, db: Database, debtor: Debtor, agent_id: int) -> None:
    assert _post(web, f"/admin/debtors/{debtor.id}/opt-out", channel="email") == 303
    assert _post(web, f"/admin/debtors/{debtor.id}/opt-out", channel="email") == 303  # already: refused
    assert _post(web, f"/admin/debtors/{debtor.id}/opt-out", channel="pigeon") == 303  # unknown: refused
    with db.session() as session:
        rows = session.scalars(select(ConsentOptOut)).all()
    assert [(row.channel, row.source, row.debtor_id) for row in rows] == [("email", "agent", debtor.id)]
    [event] = _audit(db, "consent.opted_out")
    assert event.actor == f"agent:{agent_id}" and event.data["channel"] == "email"


def test_missing_csrf_token_is_400_and_changes_nothing(web: FlaskClient, db: Database, debtor: Debtor) -> None:
    assert web.post(f"/admin/debtors/{debtor.id}/payment-link").status_code == 400
    assert web.post(f"/admin/debtors/{debtor.id}/pause", data={"until": "2026-12-15"}).status_code == 400
    assert web.post(f"/admin/debtors/{debtor.id}/opt-out", data={"channel": "all"}).status_code == 400
    with db.session() as session:
        assert session.get_one(Debtor, debtor.id).collection_paused_until is None
        assert session.scalars(select(PaymentLink)).all() == []
        assert session.scalars(select(ConsentOptOut)).all() == []
    with db.session() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.actor.like("agent:%"))).all()
    assert actions == ["agent.logged_in"]
