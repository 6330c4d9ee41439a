"""Mercado Pago: the real SDK against the stand-in for Checkout Pro preferences and payment look-ups, and signed
notifications recorded exactly once, refunds and chargebacks reversed."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bot.app import create_app
from bot.config import Settings, load_settings
from bot.domain import BadPayload, InvalidSignature, Money
from bot.models import Debtor, Invoice, Message, Payment, PaymentAllocation, PaymentLink, ProcessedEvent
from bot.payments.links import CheckoutFailed, open_checkout
from bot.payments.mercadopago_provider import MercadoPagoFailure, MercadoPagoProvider, to_mercadopago_amount
from bot.payments.webhook import MercadoPagoNotification, handle_mercadopago
from bot.portal import PortalTokens
from bot.services import bootstrap
from bot.store import Database
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET, FixedClock
from tests.standin import StandIn

ACCESS_TOKEN = "TEST-cobrabot-access-token"
WEBHOOK_SECRET = "mp-webhook-secret-test"
TOKENS = PortalTokens(TEST_SECRET, TEST_PUBLIC_URL)
MP_PAYMENT_ID = "1324567890"


def mp_signature(data_id: str, request_id: str, ts: int, secret: str = WEBHOOK_SECRET) -> str:
    """Mercado Pago's scheme: ts=<unix seconds>,v1=HMAC-SHA256(secret, "id:<data.id>;request-id:<id>;ts:<ts>;")."""
    manifest = f"id:{data_id};request-id:{request_id};ts:{ts};"
    return f"ts={ts},v1={hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()}"


def notification(
    clock: FixedClock,
    notification_id: int = 111,
    data_id: str = MP_PAYMENT_ID,
    *,
    ts: int | None = None,
    secret: str = WEBHOOK_SECRET,
    body_data_id: str | None = None,
) -> MercadoPagoNotification:
    request_id = f"req-{notification_id}"
    body = {
        "id": notification_id,
        "type": "payment",
        "action": "payment.updated",
        "api_version": "v1",
        "live_mode": False,
        "data": {"id": body_data_id or data_id},
    }
    ts = int(clock().timestamp()) if ts is None else ts
    return MercadoPagoNotification(
        json.dumps(body).encode(), data_id, mp_signature(data_id, request_id, ts, secret), request_id
    )


def mp_payment(link: PaymentLink, status: str = "approved", refunded: float = 0, **overrides: Any) -> dict[str, Any]:
    return {
        "id": int(MP_PAYMENT_ID),
        "status": status,
        "status_detail": "accredited",
        "external_reference": f"cobrabot-link-{link.id}",
        "transaction_amount": to_mercadopago_amount(Money(link.amount_minor, link.currency)),
        "transaction_amount_refunded": refunded,
        "currency_id": link.currency,
    } | overrides


@pytest.fixture
def mp_settings(database_url: str, standin: StandIn) -> Settings:
    return load_settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        public_url=TEST_PUBLIC_URL,
        mercadopago_access_token=ACCESS_TOKEN,
        mercadopago_webhook_secret=WEBHOOK_SECRET,
        mercadopago_api_url=standin.url,
    )


@pytest.fixture
def provider(mp_settings: Settings) -> MercadoPagoProvider:
    made = MercadoPagoProvider.from_settings(mp_settings)
    assert made is not None
    return made


def preference_json(preference_id: str = "pref-1") -> dict[str, Any]:
    return {
        "id": preference_id,
        "init_point": f"https://www.mercadopago.cl/checkout/v1/redirect?pref_id={preference_id}",
    }


def _link(db: Database, debtor: Debtor, provider: MercadoPagoProvider, clock: FixedClock, money: Money) -> PaymentLink:
    with db.session() as session:
        invoice_id = session.scalars(select(Invoice.id).where(Invoice.number == "F-1")).one()
    return open_checkout(db, TOKENS, debtor.id, money, "invoice", invoice_id=invoice_id, provider=provider, now=clock())


@pytest.mark.parametrize(("currency", "amount", "unit_price"), [("CLP", "45990", 45990), ("USD", "120.50", 120.5)])
def test_a_checkout_pro_preference_through_the_real_sdk(
    db: Database,
    make_creditor: Callable[..., Any],
    make_debtor: Callable[..., Debtor],
    provider: MercadoPagoProvider,
    standin: StandIn,
    clock: FixedClock,
    currency: str,
    amount: str,
    unit_price: float,
) -> None:
    debtor = make_debtor(
        creditor=make_creditor(currency=currency),
        invoices=[{"number": "F-1", "amount": amount, "due_date": date(2026, 12, 5)}],
    )
    standin.respond("POST", "/checkout/preferences", 201, preference_json())

    link = _link(db, debtor, provider, clock, Money.from_amount(amount, currency))

    assert (link.provider, link.status, link.provider_ref) == ("mercadopago", "active", "pref-1")
    assert link.url == preference_json()["init_point"]
    request = standin.requests[-1]
    assert (request.method, request.path) == ("POST", "/checkout/preferences")
    assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request.headers["X-Idempotency-Key"].startswith(f"cobrabot-payment-link-{link.id}-")
    body = request.json()
    assert body["items"] == [
        {
            "id": str(link.id),
            "title": "Pago a Aguas del Valle · documento F-1",
            "quantity": 1,
            "currency_id": currency,
            "unit_price": unit_price,
        }
    ]
    assert body["external_reference"] == f"cobrabot-link-{link.id}"
    # Notifications come from the webhook registered in Mercado Pago's dashboard: those are the signed ones.
    assert "notification_url" not in body and provider.webhook_url == f"{TEST_PUBLIC_URL}/webhooks/payments/mercadopago"
    portal_page = f"{TEST_PUBLIC_URL}/p/{link.token}"
    assert body["back_urls"] == {
        "success": f"{portal_page}?paid={link.id}",
        "pending": portal_page,
        "failure": portal_page,
    }
    assert body["expires"] is True and body["expiration_date_to"].startswith("2026-12-02T15:00:00")


def test_a_failed_preference_leaves_a_failed_link(
    db: Database, make_debtor: Callable[..., Debtor], provider: MercadoPagoProvider, standin: StandIn, clock: FixedClock
) -> None:
    debtor = make_debtor()
    standin.respond("POST", "/checkout/preferences", 400, {"message": "invalid items.unit_price", "status": 400})
    with pytest.raises(CheckoutFailed, match=r"invalid items\.unit_price"):
        _link(db, debtor, provider, clock, Money(45990, "CLP"))
    with db.session() as session:
        assert session.scalars(select(PaymentLink.status)).one() == "failed"


@pytest.fixture
def mp_link(
    db: Database, make_debtor: Callable[..., Debtor], provider: MercadoPagoProvider, standin: StandIn, clock: FixedClock
) -> PaymentLink:
    """A debtor with F-1 (45 990, linked) and an older F-2 (30 000), and a Mercado Pago link for F-1."""
    debtor = make_debtor(
        invoices=[
            {"number": "F-1", "amount": "45990", "due_date": date(2026, 12, 5)},
            {"number": "F-2", "amount": "30000", "due_date": date(2026, 11, 1)},
        ]
    )
    standin.respond("POST", "/checkout/preferences", 201, preference_json())
    return _link(db, debtor, provider, clock, Money(45990, "CLP"))


def _counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Payment, PaymentAllocation, ProcessedEvent, Message)
        }


def _lookups(standin: StandIn) -> int:
    return len([r for r in standin.requests if r.method == "GET" and r.path == f"/v1/payments/{MP_PAYMENT_ID}"])


def _invoices(db: Database) -> dict[str, tuple[str, int]]:
    with db.session() as session:
        return {row.number: (row.status, row.balance_minor) for row in session.scalars(select(Invoice))}


def test_an_approved_payment_is_read_back_recorded_and_allocated_once(
    db: Database,
    mp_link: PaymentLink,
    mp_settings: Settings,
    provider: MercadoPagoProvider,
    standin: StandIn,
    clock: FixedClock,
) -> None:
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 200, mp_payment(mp_link))

    outcome = handle_mercadopago(notification(clock), mp_settings, db, clock, provider)

    assert outcome.result == "recorded"
    lookup = [r for r in standin.requests if r.method == "GET"][-1]
    assert lookup.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    with db.session() as session:
        payment = session.get_one(Payment, outcome.payment_id)
        assert (payment.provider, payment.provider_payment_id, payment.amount_minor) == (
            "mercadopago",
            MP_PAYMENT_ID,
            45990,
        )
        f1 = session.scalars(select(Invoice).where(Invoice.number == "F-1")).one()
        assert [(a.invoice_id, a.amount_minor) for a in payment.allocations] == [(f1.id, 45990)]
        assert session.get_one(PaymentLink, mp_link.id).status == "paid"
        assert session.scalars(select(Message.template_key)).all() == ["payment_received"]
    assert _invoices(db) == {"F-1": ("paid", 0), "F-2": ("open", 30000)}

    before, lookups = _counts(db), _lookups(standin)
    replay = handle_mercadopago(notification(clock), mp_settings, db, clock, provider)
    assert replay.result == "duplicate"
    assert (_counts(db), _lookups(standin)) == (before, lookups)  # not even looked up again


@pytest.mark.parametrize(
    "forge",
    [
        {"secret": "someone-elses-secret"},
        {"ts": 1_700_000_000},  # genuine but stale: replayed from long ago
        {"body_data_id": "999"},  # signed for one payment, naming another in the body
    ],
)
def test_forged_stale_or_tampered_notifications_are_rejected_without_effect(
    db: Database,
    mp_link: PaymentLink,
    mp_settings: Settings,
    provider: MercadoPagoProvider,
    standin: StandIn,
    clock: FixedClock,
    forge: dict[str, Any],
) -> None:
    before = _counts(db)
    expected = BadPayload if "body_data_id" in forge else InvalidSignature
    forged = notification(clock, ts=int(clock().timestamp()) - 3600) if "ts" in forge else notification(clock, **forge)
    with pytest.raises(expected):
        handle_mercadopago(forged, mp_settings, db, clock, provider)
    genuine = notification(clock)
    for header in ("", "garbage", "ts=1,v1=00"):
        with pytest.raises(InvalidSignature):
            handle_mercadopago(
                MercadoPagoNotification(genuine.body, genuine.data_id, header, genuine.request_id),
                mp_settings,
                db,
                clock,
                provider,
            )
    assert (_counts(db), _lookups(standin)) == (before, 0)


@pytest.mark.parametrize("status", ["pending", "in_process", "rejected", "cancelled"])
def test_only_an_approved_payment_is_recorded(
    db: Database,
    mp_link: PaymentLink,
    mp_settings: Settings,
    provider: MercadoPagoProvider,
    standin: StandIn,
    clock: FixedClock,
    status: str,
) -> None:
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 200, mp_payment(mp_link, status=status))
    assert handle_mercadopago(notification(clock), mp_settings, db, clock, provider).result == "ignored"
    assert _counts(db)["Payment"] == 0
    assert _invoices(db)["F-1"] == ("open", 45990)


def test_a_payment_that_is_not_ours_is_ignored(
    db: Database,
    mp_link: PaymentLink,
    mp_settings: Settings,
    provider: MercadoPagoProvider,
    standin: StandIn,
    clock: FixedClock,
) -> None:
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 200, mp_payment(mp_link, external_reference="order-77"))
    assert handle_mercadopago(notification(clock), mp_settings, db, clock, provider).result == "ignored"
    assert _counts(db)["Payment"] == 0


@pytest.mark.parametrize(
    ("status", "refunded", "expected_refund", "payment_status"),
    [
        ("refunded", 45990, 45990, "refunded"),
        ("approved", 10000, 10000, "confirmed"),  # a partial refund keeps the payment approved
        ("charged_back", 0, 45990, "charged_back"),
    ],
)
def test_refunds_and_chargebacks_reverse_the_allocation(
    db: Database,
    mp_link: PaymentLink,
    mp_settings: Settings,
    provider: MercadoPagoProvider,
    standin: StandIn,
    clock: FixedClock,
    status: str,
    refunded: int,
    expected_refund: int,
    payment_status: str,
) -> None:
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 200, mp_payment(mp_link))
    paid = handle_mercadopago(notification(clock), mp_settings, db, clock, provider)
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 200, mp_payment(mp_link, status=status, refunded=refunded))

    reversed_ = handle_mercadopago(notification(clock, notification_id=222), mp_settings, db, clock, provider)

    assert (reversed_.result, reversed_.payment_id) == (
        "refunded" if status != "approved" else "recorded",
        paid.payment_id,
    )
    with db.session() as session:
        payment = session.get_one(Payment, paid.payment_id)
        assert (payment.refunded_minor, payment.status) == (expected_refund, payment_status)
        assert sum(a.amount_minor for a in payment.allocations) == payment.amount_minor - payment.refunded_minor
    assert _invoices(db) == {"F-1": ("open", expected_refund), "F-2": ("open", 30000)}
    # The same refund notified again (new notification id, same running total) reverses nothing more.
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 200, mp_payment(mp_link, status=status, refunded=refunded))
    handle_mercadopago(notification(clock, notification_id=333), mp_settings, db, clock, provider)
    assert _invoices(db)["F-1"] == ("open", expected_refund)


def test_mercadopago_unreachable_is_an_upstream_failure_and_claims_nothing(
    db: Database,
    mp_link: PaymentLink,
    mp_settings: Settings,
    provider: MercadoPagoProvider,
    standin: StandIn,
    clock: FixedClock,
) -> None:
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 503, {"message": "try later"})
    with pytest.raises(MercadoPagoFailure, match="503"):
        handle_mercadopago(notification(clock), mp_settings, db, clock, provider)
    assert _counts(db)["ProcessedEvent"] == 0  # Mercado Pago's retry will be processed
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 200, mp_payment(mp_link))
    assert handle_mercadopago(notification(clock), mp_settings, db, clock, provider).result == "recorded"


def test_the_webhook_over_http(
    db: Database, mp_link: PaymentLink, mp_settings: Settings, standin: StandIn, clock: FixedClock
) -> None:
    client: FlaskClient = create_app(services=bootstrap(mp_settings, database=db, clock=clock)).test_client()
    signed = notification(clock)
    headers = {"x-signature": signed.signature, "x-request-id": signed.request_id, "Content-Type": "application/json"}
    url = f"/webhooks/payments/mercadopago?data.id={MP_PAYMENT_ID}&type=payment"
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 200, mp_payment(mp_link))

    first = client.post(url, data=signed.body, headers=headers)
    replay = client.post(url, data=signed.body, headers=headers)
    forged = client.post(url, data=signed.body, headers=headers | {"x-signature": "ts=1,v1=00"})
    malformed = client.post(url, data=b"{", headers=headers)

    assert (first.status_code, first.get_json()) == (200, {"status": "recorded"})
    assert (replay.status_code, replay.get_json()) == (200, {"status": "duplicate"})
    assert (forged.status_code, forged.get_json()["error"]) == (403, "invalid_signature")
    assert (malformed.status_code, malformed.get_json()["error"]) == (400, "bad_payload")
    other = notification(clock, notification_id=444)
    standin.respond("GET", f"/v1/payments/{MP_PAYMENT_ID}", 500, {"message": "boom"})
    down = client.post(
        url, data=other.body, headers=headers | {"x-signature": other.signature, "x-request-id": other.request_id}
    )
    assert (down.status_code, down.get_json()["error"]) == (502, "provider_unavailable")
    plain = mp_settings.model_copy(update={"mercadopago_webhook_secret": None})
    disabled = create_app(services=bootstrap(plain, database=db, clock=clock)).test_client().post(url, data=signed.body)
    assert (disabled.status_code, disabled.get_json()["error"]) == (404, "provider_disabled")
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 1


def test_the_pay_button_redirects_to_mercadopago_when_the_creditor_chooses_it(
    db: Database,
    make_creditor: Callable[..., Any],
    make_debtor: Callable[..., Debtor],
    mp_settings: Settings,
    standin: StandIn,
    clock: FixedClock,
) -> None:
    both = mp_settings.model_copy(update={"stripe_api_key": "sk_test_x", "stripe_api_url": standin.url})
    services = bootstrap(both, database=db, clock=clock)
    debtor = make_debtor(creditor=make_creditor(settings={"payment_provider": "mercadopago"}))
    standin.respond("POST", "/checkout/preferences", 201, preference_json())
    token = services.portal.issue(debtor.id, services.portal_link_lifetime, now=clock())[0]

    response = create_app(services=services).test_client().get(f"/p/{token}/pay/F-1")

    assert (response.status_code, response.headers["Location"]) == (303, preference_json()["init_point"])
    assert [r.path for r in standin.requests] == ["/checkout/preferences"]  # Stripe was not asked
