"""The payments blueprint: Stripe webhooks over HTTP, the portal's Pay button and printable receipts."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bot.app import create_app
from bot.config import Settings, load_settings
from bot.domain import Money
from bot.models import Debtor, Invoice, Payment, PaymentLink, ProcessedEvent
from bot.payments.allocation import ReceivedPayment, record_payment
from bot.services import Services, bootstrap
from bot.store import Database
from bot.web import payments
from tests.bot.payments.test_stripe import WEBHOOK_SECRET, checkout_completed, session_json, sign
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET, FixedClock
from tests.standin import StandIn


@pytest.fixture
def settings(database_url: str, standin: StandIn) -> Settings:
    return load_settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        public_url=TEST_PUBLIC_URL,
        stripe_api_key="sk_test_cobrabot",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_url=standin.url,
    )


def _with_payments(application: Flask) -> Flask:
    # Until bot/app.py registers the blueprint itself.
    if "payments" not in application.blueprints:
        application.register_blueprint(payments.blueprint)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def app(services: Services) -> Flask:
    return _with_payments(create_app(services=services))


@pytest.fixture
def portal_only(settings: Settings, db: Database, clock: FixedClock) -> FlaskClient:
    """An app with no Stripe configured: payments go through the portal's own page."""
    plain = settings.model_copy(update={"stripe_api_key": None, "stripe_webhook_secret": None})
    return _with_payments(create_app(services=bootstrap(plain, database=db, clock=clock))).test_client()


def _token(services: Services, debtor_id: int) -> str:
    return services.portal.issue(debtor_id, services.portal_link_lifetime, now=services.clock())[0]


def test_pay_with_stripe_redirects_to_checkout_once_per_invoice(
    client: FlaskClient, services: Services, make_debtor: Callable[..., Debtor], standin: StandIn, db: Database
) -> None:
    debtor = make_debtor()
    standin.respond("POST", "/v1/checkout/sessions", 200, session_json())
    token = _token(services, debtor.id)

    first = client.get(f"/p/{token}/pay/F-1")
    second = client.get(f"/p/{token}/pay/F-1")

    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"] == session_json()["url"]
    assert len([r for r in standin.requests if r.path == "/v1/checkout/sessions"]) == 1
    with db.session() as session:
        link = session.scalars(select(PaymentLink)).one()
        assert (link.provider, link.purpose, link.amount_minor, link.provider_ref) == (
            "stripe",
            "invoice",
            45990,
            "cs_test_1",
        )


def test_pay_for_an_unknown_or_settled_invoice_or_a_bad_token(
    client: FlaskClient, services: Services, make_debtor: Callable[..., Debtor], clock: FixedClock
) -> None:
    debtor = make_debtor()
    token = _token(services, debtor.id)
    assert client.get(f"/p/{token}/pay/F-404").status_code == 404
    assert client.get("/p/not-a-token/pay/F-1").status_code == 404
    clock.advance(days=31)
    assert client.get(f"/p/{token}/pay/F-1").status_code == 410


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("es-CL", ["Pagar el documento F-1", "$45.990", "5 de diciembre de 2026", "Volver a su cuenta"]),
        ("en-US", ["Pay invoice F-1", "CLP", "December 5, 2026", "Back to your account"]),
    ],
)
def test_portal_pay_page_without_stripe(
    portal_only: FlaskClient, services: Services, make_debtor: Callable[..., Debtor], locale: str, expected: list[str]
) -> None:
    debtor = make_debtor(locale=locale)
    response = portal_only.get(f"/p/{_token(services, debtor.id)}/pay/F-1")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for text in expected:
        assert text in page
    assert f'lang="{locale[:2]}"' in page


def test_webhook_records_the_payment_over_http(
    client: FlaskClient, services: Services, make_debtor: Callable[..., Debtor], standin: StandIn, db: Database
) -> None:
    debtor = make_debtor()
    standin.respond("POST", "/v1/checkout/sessions", 200, session_json())
    client.get(f"/p/{_token(services, debtor.id)}/pay/F-1")
    with db.session() as session:
        link = session.scalars(select(PaymentLink)).one()
    payload = checkout_completed(link)
    headers = {"Stripe-Signature": sign(payload), "Content-Type": "application/json"}

    response = client.post("/webhooks/payments/stripe", data=payload, headers=headers)
    assert (response.status_code, response.get_json()) == (200, {"status": "recorded"})
    replay = client.post("/webhooks/payments/stripe", data=payload, headers=headers)
    assert (replay.status_code, replay.get_json()) == (200, {"status": "duplicate"})
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 1
        assert session.scalars(select(Invoice.status)).one() == "paid"


def test_webhook_rejections(client: FlaskClient, portal_only: FlaskClient, db: Database) -> None:
    payload = json.dumps({"id": "evt_x", "type": "charge.succeeded", "data": {"object": {}}}).encode()
    forged = client.post("/webhooks/payments/stripe", data=payload, headers={"Stripe-Signature": "t=1,v1=00"})
    assert (forged.status_code, forged.get_json()["error"]) == (403, "invalid_signature")
    malformed = client.post("/webhooks/payments/stripe", data=b"{", headers={"Stripe-Signature": sign(b"{")})
    assert (malformed.status_code, malformed.get_json()["error"]) == (400, "bad_payload")
    unknown = client.post("/webhooks/payments/paypal", data=payload)
    assert (unknown.status_code, unknown.get_json()["error"]) == (404, "unknown_provider")
    disabled = portal_only.post("/webhooks/payments/stripe", data=payload, headers={"Stripe-Signature": sign(payload)})
    assert (disabled.status_code, disabled.get_json()["error"]) == (404, "provider_disabled")
    ignored = client.post("/webhooks/payments/stripe", data=payload, headers={"Stripe-Signature": sign(payload)})
    assert (ignored.status_code, ignored.get_json()) == (200, {"status": "ignored"})
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ProcessedEvent)) == 1


def _paid(db: Database, debtor: Debtor, clock: FixedClock, amount: Money, reference: str = "pi_1") -> int:
    with db.session() as session:
        received = ReceivedPayment("stripe", reference, amount, clock(), invoice_number=None)
        recorded = record_payment(session, session.get(Debtor, debtor.id), received, "test", clock())
        session.commit()
        return recorded.payment.id


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("es-CL", ["Comprobante de pago", "$50.000", "$45.990", "$4.010", "Saldo a favor", "25 de noviembre de 2026"]),
        ("en-US", ["Payment receipt", "CLP", "Credit on account", "November 25, 2026", "Print"]),
    ],
)
def test_receipt_is_printable_in_the_debtors_language(
    client: FlaskClient,
    services: Services,
    make_debtor: Callable[..., Debtor],
    db: Database,
    clock: FixedClock,
    locale: str,
    expected: list[str],
) -> None:
    debtor = make_debtor(locale=locale)
    payment_id = _paid(db, debtor, clock, Money(50000, "CLP"))
    response = client.get(f"/p/{_token(services, debtor.id)}/receipts/{payment_id}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for text in [*expected, "F-1", "pi_1", "Ana María Pérez", "Aguas del Valle", "@media print"]:
        assert text in page


def test_another_debtors_receipt_is_not_found(
    client: FlaskClient, services: Services, make_debtor: Callable[..., Debtor], db: Database, clock: FixedClock
) -> None:
    ana = make_debtor()
    bruno = make_debtor(
        creditor=ana.creditor,
        external_ref="C-2",
        name="Bruno Soto",
        invoices=[{"number": "F-2", "amount": "1000", "due_date": date(2026, 12, 5)}],
    )
    brunos_payment = _paid(db, bruno, clock, Money(1000, "CLP"))
    assert client.get(f"/p/{_token(services, ana.id)}/receipts/{brunos_payment}").status_code == 404
    assert client.get(f"/p/{_token(services, ana.id)}/receipts/999999").status_code == 404
    assert client.get(f"/p/{_token(services, bruno.id)}/receipts/{brunos_payment}").status_code == 200
