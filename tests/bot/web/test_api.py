"""REST API v1: auth, upserts, payments, cases and portal links, and that rejected requests write nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import StringConstraints, TypeAdapter
from sqlalchemy import func, select

from bot.app import create_app
from bot.config import load_settings
from bot.models import (
    AuditEvent,
    Base,
    Case,
    ConsentOptOut,
    Creditor,
    Debtor,
    Invoice,
    Message,
    Payment,
    PaymentAllocation,
    PromiseToPay,
)
from bot.services import bootstrap
from bot.store import Database
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET, FixedClock

CREDITOR = "/api/v1/creditors/aguas-andinas"
DEBTOR = f"{CREDITOR}/debtors/C-1001"
PAYMENTS = f"{DEBTOR}/payments"


def row_counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


@pytest.fixture
def unchanged(db: Database) -> Iterator[None]:
    """Wrap a test whose requests must all be rejected: no table may gain or lose a row."""
    before = row_counts(db)
    yield
    assert row_counts(db) == before


def fields_of(response: Any) -> list[str]:
    return [problem["field"] for problem in response.get_json()["fields"]]


def debtor_body(**fields: Any) -> dict[str, Any]:
    return {
        "name": "Ana María Pérez",
        "phone": "+56 9 6123 4567",
        "email": "ana@example.cl",
        "national_id": "12.345.678-5",
        "birth_date": "1980-04-02",
        "invoices": [
            {"number": "F-1", "amount": "45990", "due_date": "2026-12-05"},
            {"number": "F-2", "amount": 12000, "due_date": "2027-01-05", "description": "Enero"},
        ],
    } | fields


def invoice(db: Database, number: str) -> Invoice:
    with db.session() as session:
        return session.scalars(select(Invoice).where(Invoice.number == number)).one()


def audit_actions(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


# ------------------------------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic dGVzdC1hcGktdG9rZW4=", "test-api-token", "Bearer ", "Bearer tést-äpi-tokén"],
)
def test_requests_without_the_right_bearer_token_are_401(client: FlaskClient, make_debtor: Callable, authorization):
    make_debtor()
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get(DEBTOR, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_bearer_scheme_is_case_insensitive(client: FlaskClient, make_debtor: Callable):
    make_debtor()
    assert client.get(DEBTOR, headers={"Authorization": "bearer test-api-token"}).status_code == 200


def test_wrong_token_writes_nothing(client: FlaskClient, unchanged):
    response = client.put("/api/v1/creditors/acme", json={"name": "Acme", "country": "US", "currency": "USD"})
    assert response.status_code == 401


def test_api_without_a_configured_token_is_disabled_but_the_document_is_public(db: Database, clock: FixedClock):
    settings = load_settings(database_url=db.url, secret_key=TEST_SECRET, api_token=None, public_url=TEST_PUBLIC_URL)
    client = create_app(services=bootstrap(settings, database=db, clock=clock)).test_client()
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
        response = client.get("/api/v1/cases", headers=headers)
        assert response.status_code == 503
        assert response.get_json()["error"] == "api_disabled"
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_wrong_method_is_405_json(client: FlaskClient, api_headers: dict[str, str], make_debtor: Callable):
    make_debtor()
    response = client.get(PAYMENTS, headers=api_headers)
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert client.delete(CREDITOR, headers=api_headers).status_code == 405


# ------------------------------------------------------------------------------------------- creditors


def test_put_creditor_creates_then_updates_then_is_idempotent(client, api_headers, db):
    body = {"name": "Acme Power", "country": "US", "currency": "USD", "default_locale": "en-US"}
    created = client.put("/api/v1/creditors/acme", json=body, headers=api_headers)
    assert created.status_code == 201
    assert created.get_json() | {"created_at": None, "updated_at": None} == {
        "slug": "acme",
        "name": "Acme Power",
        "country": "US",
        "currency": "USD",
        "default_locale": "en-US",
        "timezone": "America/Santiago",
        "verification_method": "national_id_last4",
        "negotiation_policy": {},
        "created_at": None,
        "updated_at": None,
    }
    renamed = client.put("/api/v1/creditors/acme", json=body | {"name": "Acme"}, headers=api_headers)
    assert renamed.status_code == 200 and renamed.get_json()["name"] == "Acme"
    before = row_counts(db)
    again = client.put("/api/v1/creditors/acme", json=body | {"name": "Acme"}, headers=api_headers)
    assert again.status_code == 200
    assert row_counts(db) == before
    assert audit_actions(db) == ["creditor.created", "creditor.updated"]


def test_put_creditor_keeps_omitted_settings_and_replaces_a_given_policy(client, api_headers, db):
    policy = {"max_installments": 6, "min_down_payment_pct": 10.5, "tiers": [{"days": 30, "discount": "0.05"}]}
    body = {"name": "Acme", "country": "CL", "currency": "CLP", "timezone": "America/Punta_Arenas"}
    client.put("/api/v1/creditors/acme", json=body | {"negotiation_policy": policy}, headers=api_headers)
    response = client.put(
        "/api/v1/creditors/acme", json={"name": "Acme", "country": "CL", "currency": "CLP"}, headers=api_headers
    )
    assert response.get_json()["timezone"] == "America/Punta_Arenas"
    assert response.get_json()["negotiation_policy"] == policy
    with db.session() as session:
        stored = session.scalars(select(Creditor).where(Creditor.slug == "acme")).one()
        assert stored.negotiation_policy == policy


@pytest.mark.parametrize(
    ("slug", "body", "field"),
    [
        ("Acme", {"name": "Acme", "country": "CL", "currency": "CLP"}, "slug"),
        ("a", {"name": "Acme", "country": "CL", "currency": "CLP"}, "slug"),
        ("acme", {"name": "Acme", "country": "XX", "currency": "CLP"}, "country"),
        ("acme", {"name": "Acme", "country": "CL", "currency": "ABC"}, "currency"),
        ("acme", {"name": "Acme", "country": "CL", "currency": "CLP", "timezone": "Mars/Base"}, "timezone"),
        (
            "acme",
            {"name": "Acme", "country": "CL", "currency": "CLP", "default_locale": "en_US@" + "x" * 30},
            "default_locale",
        ),
        (
            "acme",
            {"name": "Acme", "country": "CL", "currency": "CLP", "verification_method": "sms"},
            "verification_method",
        ),
        ("acme", {"name": " ", "country": "CL", "currency": "CLP"}, "name"),
        ("acme", {"name": "Acme", "country": "CL", "currency": "CLP", "color": "red"}, "color"),
        (
            "acme",
            {"name": "Acme", "country": "CL", "currency": "CLP", "negotiation_policy": {"a": [[[[[[[[[[1]]]]]]]]]]}},
            "negotiation_policy",
        ),
        (
            "acme",
            {"name": "Acme", "country": "CL", "currency": "CLP", "negotiation_policy": {"x": 1e308 * 10}},
            "negotiation_policy",
        ),
    ],
)
def test_invalid_creditor_is_422_naming_the_field(client, api_headers, unchanged, slug, body, field):
    raw = json.dumps(body).replace("Infinity", "1e999")
    response = client.put(f"/api/v1/creditors/{slug}", data=raw, headers=api_headers)
    assert response.status_code == 422
    assert field in fields_of(response)


# --------------------------------------------------------------------------------------------- debtors


def test_put_debtor_creates_it_with_invoices_and_never_shows_identity_hashes(client, api_headers, make_creditor, db):
    make_creditor()
    response = client.put(DEBTOR, json=debtor_body(), headers=api_headers)
    assert response.status_code == 201
    debtor = response.get_json()
    assert debtor["external_ref"] == "C-1001" and debtor["creditor"] == "aguas-andinas"
    assert debtor["phone"] == "+56961234567"
    assert debtor["locale"] == "es-CL" and debtor["timezone"] == "America/Santiago"
    assert debtor["balances"] == [{"currency": "CLP", "amount": "57990", "amount_minor": 57990}]
    assert [(i["number"], i["amount"], i["balance"], i["status"]) for i in debtor["invoices"]] == [
        ("F-1", "45990", "45990", "open"),
        ("F-2", "12000", "12000", "open"),
    ]
    assert [(item["type"], item["action"]) for item in debtor["timeline"]] == [("audit", "debtor.created")]
    with db.session() as session:
        stored = session.scalars(select(Debtor)).one()
        hashes = [stored.national_id_hash, stored.birth_date_hash]
    text = response.get_data(as_text=True)
    assert all(value and value not in text for value in hashes)
    assert "national_id" not in text and "birth_date" not in text


def test_same_debtor_upsert_twice_changes_nothing(client, api_headers, make_creditor, db):
    make_creditor()
    client.put(DEBTOR, json=debtor_body(), headers=api_headers)
    before = row_counts(db)
    with db.session() as session:
        stamps = session.execute(select(Debtor.updated_at, Invoice.updated_at).join(Invoice)).all()
    second = client.put(DEBTOR, json=debtor_body(external_ref="C-1001"), headers=api_headers)
    assert second.status_code == 200
    assert row_counts(db) == before
    with db.session() as session:
        assert session.execute(select(Debtor.updated_at, Invoice.updated_at).join(Invoice)).all() == stamps


def test_put_debtor_updates_fields_and_invoices_and_keeps_unmentioned_ones(client, api_headers, make_debtor, db):
    make_debtor()
    body = {"name": "Ana M. Pérez", "invoices": [{"number": "F-9", "amount": "1000", "due_date": "2027-03-01"}]}
    response = client.put(DEBTOR, json=body, headers=api_headers)
    assert response.status_code == 200
    assert response.get_json()["name"] == "Ana M. Pérez"
    assert response.get_json()["phone"] == "+56961234567"
    assert [i["number"] for i in response.get_json()["invoices"]] == ["F-1", "F-9"]
    assert audit_actions(db) == ["debtor.updated"]


def test_put_debtor_for_unknown_creditor_is_404(client, api_headers, unchanged):
    response = client.put(DEBTOR, json=debtor_body(), headers=api_headers)
    assert response.status_code == 404


def test_body_external_ref_must_match_the_path(client, api_headers, make_creditor, db):
    make_creditor()
    before = row_counts(db)
    response = client.put(DEBTOR, json=debtor_body(external_ref="C-2002"), headers=api_headers)
    assert response.status_code == 422
    assert fields_of(response) == ["external_ref"]
    assert row_counts(db) == before


def test_invoice_of_another_debtor_is_422_for_new_and_known_debtors(client, api_headers, make_debtor, db):
    owner = make_debtor(external_ref="C-9")
    make_debtor(creditor=owner.creditor, invoices=[{"number": "F-5", "amount": "1", "due_date": date(2027, 1, 1)}])
    taken = {"name": "Otro", "invoices": [{"number": "F-1", "amount": "1", "due_date": "2027-01-01"}]}
    before = row_counts(db)
    for known_or_new in ("C-1001", "C-2002"):
        response = client.put(f"{CREDITOR}/debtors/{known_or_new}", json=taken, headers=api_headers)
        assert response.status_code == 422
        assert fields_of(response) == ["invoices.0.number"]
    assert row_counts(db) == before
    assert invoice(db, "F-1").debtor_id == owner.id


BAD_BODIES = [
    pytest.param("{", id="malformed"),
    pytest.param("", id="empty"),
    pytest.param("[]", id="array"),
    pytest.param('"text"', id="string"),
    pytest.param(b"\xff\xfe{", id="not-utf8"),
    pytest.param('{"name": NaN}', id="nan-literal"),
    pytest.param(
        '{"name": "A", "invoices": [{"number": "1", "amount": Infinity, "due_date": "2027-01-01"}]}',
        id="infinity-literal",
    ),
    pytest.param("[" * 100_000 + "]" * 100_000, id="deep-nesting"),
    pytest.param(
        '{"name": "A", "invoices": [{"number": "1", "amount": ' + "9" * 5000 + ', "due_date": "2027-01-01"}]}',
        id="integer-too-long-to-parse",
    ),
]
BAD_FIELDS = [
    pytest.param({"name": "Ana\x00"}, "name", id="nul"),
    pytest.param({"name": "Ana\ud800"}, "name", id="lone-surrogate"),
    pytest.param({"name": "A", "extra\x00": 1}, "extra\x00", id="nul-key"),
    pytest.param({"name": "x" * 10_000}, "name", id="long-name"),
    pytest.param({"name": "A", "locale": "en_US@" + "x" * 40}, "locale", id="long-locale"),
    pytest.param({"name": "A", "phone": "1" * 1000}, "phone", id="long-phone"),
    pytest.param({"name": "A", "phone": "+56 2 123"}, "phone", id="bad-phone"),
    pytest.param({"name": "A", "email": "not-an-email"}, "email", id="email"),
    pytest.param({"name": "A", "channel_preference": ["fax"]}, "channel_preference", id="channel"),
    pytest.param({"name": "A", "nickname": "Anita"}, "nickname", id="unknown-field"),
    pytest.param({"name": "A", "country": "XX"}, "country", id="unknown-country"),
    pytest.param({"name": "A", "invoices": {"number": "1"}}, "invoices", id="invoices-not-list"),
]
BAD_INVOICES = [
    pytest.param({"amount": "NaN"}, "invoices.0.amount", id="nan-string"),
    pytest.param({"amount": "-Infinity"}, "invoices.0.amount", id="infinity-string"),
    pytest.param({"amount": "1e999999999"}, "invoices.0.amount", id="huge-exponent"),
    pytest.param({"amount": 10**30}, "invoices.0.amount", id="huge-number"),
    pytest.param({"amount": "99999999999999999999"}, "invoices.0.amount", id="beyond-bigint"),
    pytest.param({"amount": "-5"}, "invoices.0.amount", id="negative"),
    pytest.param({"amount": "100.5"}, "invoices.0.amount", id="clp-decimals"),
    pytest.param({"amount": "0.00001"}, "invoices.0.amount", id="too-many-decimals"),
    pytest.param({"balance": "50000"}, "invoices.0", id="balance-above-amount"),
    pytest.param({"due_date": "10000-01-01"}, "invoices.0.due_date", id="date-out-of-range"),
    pytest.param({"due_date": "2026-02-30"}, "invoices.0.due_date", id="no-such-day"),
    pytest.param({"due_date": 10**20}, "invoices.0.due_date", id="timestamp-out-of-range"),
    pytest.param({"number": "F-\x00"}, "invoices.0.number", id="nul-in-number"),
    pytest.param({"description": "d" * 501}, "invoices.0.description", id="long-description"),
    pytest.param({"currency": "XYZ"}, "invoices.0.currency", id="unknown-currency"),
]


@pytest.mark.parametrize("raw", BAD_BODIES)
def test_unreadable_body_is_400_and_writes_nothing(client, api_headers, make_creditor, db, raw):
    make_creditor()
    before = row_counts(db)
    response = client.put(DEBTOR, data=raw, headers=api_headers | {"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"] in {"bad_request", "malformed_json"}
    assert response.get_json()["message"]
    assert row_counts(db) == before


@pytest.mark.parametrize(("body", "field"), BAD_FIELDS)
def test_invalid_debtor_field_is_422_and_writes_nothing(client, api_headers, make_debtor, db, body, field):
    make_debtor()
    before = row_counts(db)
    raw = json.dumps(body)  # json.dumps escapes NUL and surrogates, exactly as a client library would send them
    response = client.put(DEBTOR, data=raw, headers=api_headers | {"Content-Type": "application/json"})
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"] == "validation_failed"
    assert field in fields_of(response)
    assert row_counts(db) == before


@pytest.mark.parametrize(("change", "field"), BAD_INVOICES)
def test_invalid_invoice_is_422_naming_its_dotted_path(client, api_headers, make_debtor, db, change, field):
    make_debtor()
    before = row_counts(db)
    bad = {"number": "F-7", "amount": "45990", "due_date": "2027-01-01"} | change
    response = client.put(DEBTOR, json={"name": "Ana", "invoices": [bad]}, headers=api_headers)
    assert response.status_code == 422, response.get_json()
    assert field in fields_of(response)
    assert row_counts(db) == before


def test_get_debtor_is_404_for_unknown_creditor_debtor_or_impossible_ref(client, api_headers, make_debtor):
    make_debtor()
    for path in (
        f"{CREDITOR}/debtors/C-404",
        "/api/v1/creditors/nope/debtors/C-1001",
        f"{CREDITOR}/debtors/%00",
        f"{CREDITOR}/debtors/%20C-1001",
        f"{CREDITOR}/debtors/" + "x" * 101,
    ):
        response = client.get(path, headers=api_headers)
        assert response.status_code == 404, path
        assert response.get_json()["error"] == "not_found"


@pytest.mark.parametrize("query", ["timeline_limit=0", "timeline_limit=1001", "timeline_limit=x", "limit=5"])
def test_get_debtor_with_bad_query_is_422(client, api_headers, make_debtor, query):
    make_debtor()
    assert client.get(f"{DEBTOR}?{query}", headers=api_headers).status_code == 422


def test_timeline_merges_every_source_newest_first(client, api_headers, make_debtor, db, clock):
    debtor = make_debtor()
    at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    with db.session() as session:
        session.add_all(
            [
                Message(debtor_id=debtor.id, direction="out", channel="sms", body="Recordatorio " * 40, created_at=at),
                PromiseToPay(
                    debtor_id=debtor.id,
                    amount_minor=10000,
                    currency="CLP",
                    promised_date=date(2026, 11, 20),
                    created_at=at + timedelta(days=1),
                ),
                Case(debtor_id=debtor.id, kind="dispute", reason="ya pagué", created_at=at + timedelta(days=2)),
                ConsentOptOut(debtor_id=debtor.id, channel="sms", source="keyword", created_at=at + timedelta(days=3)),
            ]
        )
        session.commit()
    client.post(PAYMENTS, json={"amount": "1000", "reference": "R-1"}, headers=api_headers)
    timeline = client.get(DEBTOR, headers=api_headers).get_json()["timeline"]
    assert [item["type"] for item in timeline] == ["payment", "audit", "opt_out", "case", "promise", "message"]
    assert [item["at"] for item in timeline] == sorted((item["at"] for item in timeline), reverse=True)
    assert timeline[0]["reference"] == "R-1" and timeline[1]["action"] == "payment.recorded"
    assert timeline[3]["kind"] == "dispute" and timeline[4]["amount"] == "10000"
    assert len(timeline[5]["text"]) == 280
    limited = client.get(f"{DEBTOR}?timeline_limit=2", headers=api_headers).get_json()["timeline"]
    assert [item["type"] for item in limited] == ["payment", "audit"]


# -------------------------------------------------------------------------------------------- payments


def allocations(response: Any) -> list[tuple[str | None, str]]:
    return [(a["invoice_number"], a["amount"]) for a in response.get_json()["allocations"]]


@pytest.fixture
def two_invoices(make_debtor: Callable) -> Debtor:
    return make_debtor(
        invoices=[
            {"number": "F-2", "amount": "30000", "due_date": date(2027, 1, 5)},
            {"number": "F-1", "amount": "45990", "due_date": date(2026, 12, 5)},
        ]
    )


def test_partial_payment_lowers_the_oldest_invoice(client, api_headers, two_invoices, db, clock):
    response = client.post(PAYMENTS, json={"amount": "20000", "reference": "TRX-1"}, headers=api_headers)
    assert response.status_code == 201
    payment = response.get_json()
    assert payment["amount"] == "20000" and payment["currency"] == "CLP"
    assert payment["received_at"] == "2026-11-25T15:00:00Z"
    assert allocations(response) == [("F-1", "20000")]
    assert (invoice(db, "F-1").balance_minor, invoice(db, "F-1").status) == (25990, "open")
    assert invoice(db, "F-2").balance_minor == 30000
    with db.session() as session:
        stored = session.scalars(select(Payment)).one()
        assert (stored.provider, stored.provider_payment_id, stored.debtor_id) == ("api", "TRX-1", two_invoices.id)
    assert audit_actions(db) == ["payment.recorded"]


def test_exact_payment_marks_invoices_paid_oldest_first(client, api_headers, two_invoices, db):
    response = client.post(PAYMENTS, json={"amount": 75990, "reference": "TRX-1"}, headers=api_headers)
    assert allocations(response) == [("F-1", "45990"), ("F-2", "30000")]
    assert [(invoice(db, n).balance_minor, invoice(db, n).status) for n in ("F-1", "F-2")] == [(0, "paid")] * 2
    assert client.get(DEBTOR, headers=api_headers).get_json()["balances"] == []


def test_overpayment_leaves_the_rest_as_credit(client, api_headers, make_debtor, db):
    make_debtor()
    response = client.post(PAYMENTS, json={"amount": "50000", "reference": "TRX-1"}, headers=api_headers)
    assert allocations(response) == [("F-1", "45990"), (None, "4010")]
    with db.session() as session:
        credit = session.scalars(select(PaymentAllocation).where(PaymentAllocation.invoice_id.is_(None))).one()
        assert credit.amount_minor == 4010


def test_named_invoice_is_paid_first(client, api_headers, two_invoices, db):
    body = {"amount": "40000", "reference": "TRX-1", "invoice_number": "F-2"}
    response = client.post(PAYMENTS, json=body, headers=api_headers)
    assert allocations(response) == [("F-2", "30000"), ("F-1", "10000")]
    assert invoice(db, "F-2").status == "paid"


def test_payment_in_another_currency_only_touches_invoices_in_that_currency(
    client, api_headers, make_creditor, make_debtor, db
):
    creditor = make_creditor(slug="acme", country="US", currency="USD", default_locale="en-US")
    make_debtor(
        creditor=creditor,
        phone="+1 415 555 2671",
        invoices=[
            {"number": "U-1", "amount": "80.25", "due_date": date(2026, 12, 1)},
            {"number": "P-1", "amount": "5000", "currency": "CLP", "due_date": date(2026, 11, 1)},
        ],
    )
    path = "/api/v1/creditors/acme/debtors/C-1001/payments"
    usd = client.post(path, json={"amount": "100.5", "reference": "U"}, headers=api_headers)
    assert allocations(usd) == [("U-1", "80.25"), (None, "20.25")]
    clp = client.post(path, json={"amount": "1000", "currency": "CLP", "reference": "C"}, headers=api_headers)
    assert allocations(clp) == [("P-1", "1000")]
    assert invoice(db, "P-1").balance_minor == 4000
    mismatch = client.post(path, json={"amount": "1", "reference": "M", "invoice_number": "P-1"}, headers=api_headers)
    assert mismatch.status_code == 422 and fields_of(mismatch) == ["invoice_number"]


def test_same_reference_twice_returns_the_first_payment_and_changes_nothing(client, api_headers, make_debtor, db):
    make_debtor()
    body = {"amount": "20000", "reference": "TRX-1", "received_at": "2026-11-24T10:30:00-03:00"}
    first = client.post(PAYMENTS, json=body, headers=api_headers)
    before = row_counts(db)
    second = client.post(PAYMENTS, json=body, headers=api_headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.get_json() == first.get_json()
    assert first.get_json()["received_at"] == "2026-11-24T13:30:00Z"
    assert row_counts(db) == before
    assert invoice(db, "F-1").balance_minor == 25990


def test_reusing_a_reference_for_a_different_payment_is_409(client, api_headers, make_debtor, db):
    make_debtor()
    client.post(PAYMENTS, json={"amount": "20000", "reference": "TRX-1"}, headers=api_headers)
    before = row_counts(db)
    response = client.post(PAYMENTS, json={"amount": "25000", "reference": "TRX-1"}, headers=api_headers)
    assert response.status_code == 409
    assert response.get_json()["error"] == "reference_conflict"
    assert row_counts(db) == before


def test_reusing_a_reference_for_another_debtor_is_409(client, api_headers, make_debtor, db):
    first = make_debtor()
    make_debtor(creditor=first.creditor, external_ref="C-2", invoices=[])
    client.post(PAYMENTS, json={"amount": "20000", "reference": "TRX-1"}, headers=api_headers)
    before = row_counts(db)
    other = f"{CREDITOR}/debtors/C-2/payments"
    response = client.post(other, json={"amount": "20000", "reference": "TRX-1"}, headers=api_headers)
    assert response.status_code == 409
    assert row_counts(db) == before


def test_concurrent_payments_never_overspend_and_record_a_reference_once(app, api_headers, make_debtor, db):
    make_debtor()

    def pay(reference: str) -> int:
        with app.test_client() as client:
            return client.post(
                PAYMENTS, json={"amount": "10000", "reference": reference}, headers=api_headers
            ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        distinct = list(pool.map(pay, [f"R-{n}" for n in range(8)]))
        same = list(pool.map(pay, ["SAME"] * 8))
    assert distinct == [201] * 8
    assert sorted(same) == [200] * 7 + [201]
    assert (invoice(db, "F-1").balance_minor, invoice(db, "F-1").status) == (0, "paid")
    with db.session() as session:
        assert session.scalar(select(func.sum(PaymentAllocation.amount_minor))) == 90000
        assert session.scalar(select(func.count()).select_from(Payment)) == 9


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "100.5", "reference": "R"}, "amount"),
        ({"amount": "0", "reference": "R"}, "amount"),
        ({"amount": -5, "reference": "R"}, "amount"),
        ({"amount": "1e999999999", "reference": "R"}, "amount"),
        ({"amount": "NaN", "reference": "R"}, "amount"),
        ({"amount": "99999999999999999999", "reference": "R"}, "amount"),
        ({"amount": "100"}, "reference"),
        ({"amount": "100", "reference": ""}, "reference"),
        ({"amount": "100", "reference": "R" * 129}, "reference"),
        ({"amount": "100", "reference": "R\x00"}, "reference"),
        ({"amount": "100", "reference": "R", "currency": "usd"}, "currency"),
        ({"amount": "100", "reference": "R", "currency": "ZZZ"}, "currency"),
        ({"amount": "100", "reference": "R", "received_at": "2026-11-24T10:30:00"}, "received_at"),
        ({"amount": "100", "reference": "R", "received_at": "0001-01-01T00:00:00+01:00"}, "received_at"),
        ({"amount": "100", "reference": "R", "received_at": "2026-12-25T00:00:00Z"}, "received_at"),
        ({"amount": "100", "reference": "R", "invoice_number": "F-404"}, "invoice_number"),
        ({"amount": "100", "reference": "R", "source": "erp"}, "source"),
    ],
)
def test_invalid_payment_is_422_and_writes_nothing(client, api_headers, make_debtor, db, body, field):
    make_debtor()
    before = row_counts(db)
    response = client.post(PAYMENTS, data=json.dumps(body), headers=api_headers | {"Content-Type": "application/json"})
    assert response.status_code == 422, response.get_json()
    assert fields_of(response) == [field]
    assert row_counts(db) == before
    assert invoice(db, "F-1").balance_minor == 45990


def test_payment_for_unknown_debtor_is_404(client, api_headers, unchanged):
    response = client.post(
        f"{CREDITOR}/debtors/C-404/payments", json={"amount": "1", "reference": "R"}, headers=api_headers
    )
    assert response.status_code == 404


def test_malformed_payment_body_is_400(client, api_headers, make_debtor, db):
    make_debtor()
    before = row_counts(db)
    response = client.post(PAYMENTS, data='{"amount": 1,', headers=api_headers)
    assert response.status_code == 400
    assert row_counts(db) == before


# ----------------------------------------------------------------------------------- cases and portal


@pytest.fixture
def cases(make_creditor: Callable, make_debtor: Callable, db: Database) -> list[Case]:
    other = make_creditor(slug="acme", name="Acme")
    ana = make_debtor()
    bob = make_debtor(creditor=other, external_ref="B-1", phone="+56 9 6123 4568", invoices=[])
    at = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [
        Case(
            debtor_id=ana.id,
            kind="dispute",
            status="open",
            reason="no reconozco",
            created_at=at,
            sla_due_at=at + timedelta(days=2),
        ),
        Case(debtor_id=ana.id, kind="handoff", status="open", created_at=at + timedelta(hours=1)),
        Case(debtor_id=bob.id, kind="dispute", status="resolved", created_at=at + timedelta(hours=2)),
        Case(debtor_id=bob.id, kind="dispute", status="open", created_at=at + timedelta(hours=3)),
    ]
    with db.session() as session:
        session.add_all(rows)
        session.commit()
    return rows


def test_list_cases_filters_pages_and_counts(client, api_headers, cases):
    everything = client.get("/api/v1/cases", headers=api_headers).get_json()
    assert everything["total"] == 4 and [c["id"] for c in everything["cases"]] == [c.id for c in reversed(cases)]
    page = client.get("/api/v1/cases?status=open&kind=dispute&limit=1&offset=1", headers=api_headers).get_json()
    assert (page["total"], page["limit"], page["offset"]) == (2, 1, 1)
    assert page["cases"] == [
        {
            "id": cases[0].id,
            "kind": "dispute",
            "status": "open",
            "debtor_external_ref": "C-1001",
            "creditor_slug": "aguas-andinas",
            "reason": "no reconozco",
            "sla_due_at": "2026-11-03T00:00:00Z",
            "created_at": "2026-11-01T00:00:00Z",
        }
    ]
    acme = client.get("/api/v1/cases?creditor=acme", headers=api_headers).get_json()
    assert [c["debtor_external_ref"] for c in acme["cases"]] == ["B-1", "B-1"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("creditor=nope", 404),
        ("limit=0", 422),
        ("limit=201", 422),
        ("offset=-1", 422),
        ("offset=99999999999999999999999", 422),
        ("status=op%00en", 422),
        ("kind=" + "x" * 100, 422),
        ("stauts=open", 422),
    ],
)
def test_list_cases_rejects_bad_filters(client, api_headers, cases, query, status):
    response = client.get(f"/api/v1/cases?{query}", headers=api_headers)
    assert response.status_code == status


def test_portal_link_is_signed_expiring_and_audited(client, api_headers, make_debtor, services, clock, db):
    debtor = make_debtor()
    response = client.post(f"{DEBTOR}/portal-link", headers=api_headers)
    assert response.status_code == 200
    link = response.get_json()
    assert link["expires_at"] == "2026-12-25T15:00:00Z"
    assert link["url"].startswith(f"{TEST_PUBLIC_URL}/p/")
    assert services.portal.verify(link["url"].rsplit("/", 1)[1], now=clock()) == debtor.id
    assert audit_actions(db) == ["portal_link.issued"]
    assert client.get(link["url"].removeprefix(TEST_PUBLIC_URL)).status_code == 200


def test_portal_link_for_unknown_debtor_is_404(client, api_headers, unchanged):
    assert client.post(f"{CREDITOR}/debtors/C-404/portal-link", headers=api_headers).status_code == 404


# ------------------------------------------------------------------------------------------ any text

# Every code point, NUL and lone surrogates included: what a buggy client or an attacker may send.
ANY_TEXT = st.text(st.characters(exclude_categories=[]), max_size=120)
# Bodies strip blanks the way pydantic does (Unicode White_Space, which is not quite Python's str.strip).
stripped = TypeAdapter(Annotated[str, StringConstraints(strip_whitespace=True)]).validate_python


@pytest.fixture
def seeded(make_debtor: Callable) -> Debtor:
    return make_debtor()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=ANY_TEXT, number=ANY_TEXT, description=ANY_TEXT)
def test_any_text_in_a_debtor_is_stored_exactly_or_rejected(client, api_headers, seeded, name, number, description):
    body = {
        "name": name,
        "invoices": [{"number": number, "amount": "1", "due_date": "2027-01-01", "description": description}],
    }
    response = client.put(DEBTOR, data=json.dumps(body), headers=api_headers | {"Content-Type": "application/json"})
    assert response.status_code in {200, 422}, response.get_json()
    if response.status_code == 200:
        stored = client.get(DEBTOR, headers=api_headers).get_json()
        assert stored["name"] == stripped(name)
        assert (stripped(number), stripped(description)) in {
            (i["number"], i["description"]) for i in stored["invoices"]
        }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reference=ANY_TEXT, invoice_number=ANY_TEXT | st.none())
def test_any_text_in_a_payment_is_recorded_or_rejected(client, api_headers, seeded, reference, invoice_number):
    body = {"amount": "1", "reference": reference, "invoice_number": invoice_number}
    response = client.post(PAYMENTS, data=json.dumps(body), headers=api_headers | {"Content-Type": "application/json"})
    assert response.status_code in {200, 201, 422}, response.get_json()
    if response.status_code in {200, 201}:
        assert response.get_json()["reference"] == stripped(reference)


def test_a_payment_that_covers_a_promise_keeps_it(client, api_headers, make_debtor, db, clock):
    debtor = make_debtor()
    with db.session() as session:
        session.add(
            PromiseToPay(
                debtor_id=debtor.id,
                amount_minor=30_000,
                currency="CLP",
                promised_date=date(2026, 11, 27),
                created_at=clock(),
            )
        )
        session.commit()
    clock.advance(hours=2)
    response = client.post(PAYMENTS, json={"amount": "30000", "reference": "TRX-P"}, headers=api_headers)
    assert response.status_code == 201
    with db.session() as session:
        assert session.scalars(select(PromiseToPay.status)).one() == "kept"


def test_debtor_shows_its_risk_score_with_the_factors_behind_it(client, api_headers, make_debtor, db):
    debtor = make_debtor()
    with db.session() as session:
        row = session.get(Debtor, debtor.id)
        row.risk_score, row.segment = 62.0, "high"
        row.risk_factors = {"days_past_due": {"value": 40, "points": 30}}
        session.commit()
    body = client.get(DEBTOR, headers=api_headers).get_json()
    assert (body["risk_score"], body["segment"]) == (62.0, "high")
    assert body["risk_factors"] == {"days_past_due": {"value": 40, "points": 30}}
