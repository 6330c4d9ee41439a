"""Debtor input: phones to E.164, idempotent upsert by external ref, identity data only as keyed hashes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bot.debtors import DebtorIn, FieldError, national_id_tail, normalize_phone, secret_hash, to_minor, upsert_debtor
from bot.models import Creditor, Debtor, Invoice
from bot.store import Database

SECRET = "test-secret-key"
INVOICE = {"number": "F-1", "amount": "45990", "due_date": date(2026, 12, 5)}


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+56 9 6123 4567", "CL", "+56961234567"),
        ("9 6123 4567", "CL", "+56961234567"),
        ("961234567", "CL", "+56961234567"),
        ("(+56) 9-6123-4567", "CL", "+56961234567"),
        ("0056 9 6123 4567", "CL", "+56961234567"),
        ("56 9 6123 4567", "CL", "+56961234567"),
        ("2 2123 4567", "CL", "+56221234567"),
        ("55 1234 5678", "MX", "+525512345678"),
        ("(55) 1234-5678", "MX", "+525512345678"),
        ("+52 55 1234 5678", "MX", "+525512345678"),
        ("+52 (81) 8123 4567", "MX", "+528181234567"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("1-415-555-2671", "US", "+14155552671"),
        (" 4155552671 ", "US", "+14155552671"),
        ("tel:+1-415-555-2671", "US", "+14155552671"),
        ("+1 415 555 2671", "CL", "+14155552671"),
        ("+56 9 6123 4567", "US", "+56961234567"),
    ],
)
def test_normalize_phone_to_e164(raw: str, region: str, e164: str) -> None:
    assert normalize_phone(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("", "CL"),
        ("abc", "CL"),
        ("12345", "CL"),
        ("+56 9 123", "CL"),
        ("+56 9 6123 4567 8", "CL"),
        ("123", "MX"),
        ("555-0100", "US"),
        ("(415) 555-267", "US"),
        ("+1 999 555 2671", "US"),
    ],
)
def test_invalid_phone_is_a_field_error(raw: str, region: str) -> None:
    with pytest.raises(FieldError) as raised:
        normalize_phone(raw, region)
    assert raised.value.field == "phone"


@pytest.fixture
def creditor(make_creditor: Callable[..., Creditor]) -> Creditor:
    return make_creditor()


def upsert(db: Database, creditor: Creditor, **fields: Any) -> tuple[bool, int, int]:
    data = DebtorIn.model_validate({"external_ref": "C-1001", "name": "Ana María Pérez"} | fields)
    with db.session() as session:
        result = upsert_debtor(session, session.merge(creditor), data, SECRET)
        session.commit()
        return result.created, result.invoices_created, result.invoices_updated


def count(session: Session, model: type[Any]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_upsert_is_idempotent(db: Database, creditor: Creditor) -> None:
    fields = {"phone": "9 6123 4567", "email": "Ana@Example.cl", "national_id": "12.345.678-K", "invoices": [INVOICE]}
    assert upsert(db, creditor, **fields) == (True, 1, 0)
    assert upsert(db, creditor, **fields) == (False, 0, 0)
    with db.session() as session:
        assert (count(session, Debtor), count(session, Invoice)) == (1, 1)
        debtor = session.scalars(select(Debtor)).one()
        assert (debtor.phone, debtor.email, debtor.locale) == ("+56961234567", "ana@example.cl", "es-CL")


def test_upsert_updates_changed_invoices_and_adds_new_ones(db: Database, creditor: Creditor) -> None:
    upsert(db, creditor, invoices=[INVOICE])
    paid = INVOICE | {"balance": "0"}
    second = {"number": "F-2", "amount": "1000", "due_date": date(2027, 1, 5)}
    assert upsert(db, creditor, invoices=[paid, second]) == (False, 1, 1)
    with db.session() as session:
        invoices = {invoice.number: invoice for invoice in session.scalars(select(Invoice))}
    assert (invoices["F-1"].balance_minor, invoices["F-1"].status) == (0, "paid")
    assert (invoices["F-2"].amount_minor, invoices["F-2"].currency) == (1000, "CLP")


def test_amount_with_more_decimals_than_the_currency_is_a_field_error(db: Database, creditor: Creditor) -> None:
    with pytest.raises(FieldError) as raised:
        upsert(db, creditor, invoices=[INVOICE | {"amount": "100.5"}])
    assert raised.value.field == "invoices.0.amount"


@pytest.mark.parametrize(
    ("national_id", "tail"),
    [
        ("12.345.678-K", "5678"),
        ("12.345.678-5", "5678"),
        ("123-45-6789", "6789"),
        ("GODE561231HDFRRN09", "3109"),
        ("  9876 5432 ", "5432"),
    ],
)
def test_national_id_tail_is_the_last_four_digits(national_id: str, tail: str) -> None:
    assert national_id_tail(national_id) == tail


def test_national_id_is_stored_only_as_a_keyed_hash_of_its_last_four_digits(db: Database, creditor: Creditor) -> None:
    upsert(db, creditor, national_id="12.345.678-K", birth_date=date(1980, 3, 14))
    with db.session() as session:
        debtor = session.scalars(select(Debtor)).one()
        row = session.execute(text("SELECT * FROM debtors")).one()
    assert debtor.national_id_hash == secret_hash(SECRET, "national_id", "5678")
    assert debtor.national_id_hash != secret_hash("another-secret", "national_id", "5678")
    assert debtor.birth_date_hash == secret_hash(SECRET, "birth_date", "1980-03-14")
    stored = " ".join(str(value) for value in row)
    assert not any(leak in stored for leak in ("12.345.678", "12345678", "5678-K", "1980-03-14"))


def test_invoice_of_another_existing_debtor_is_a_field_error(db: Database, creditor: Creditor) -> None:
    upsert(db, creditor, invoices=[INVOICE])
    upsert(db, creditor, external_ref="C-2002", name="Otro Deudor")
    with pytest.raises(FieldError) as raised:
        upsert(db, creditor, external_ref="C-2002", name="Otro Deudor", invoices=[INVOICE])
    assert raised.value.field == "invoices.0.number"


def test_invoice_of_another_debtor_given_to_a_new_debtor_is_a_field_error(db: Database, creditor: Creditor) -> None:
    upsert(db, creditor, invoices=[INVOICE])
    with pytest.raises(FieldError) as raised:
        upsert(db, creditor, external_ref="C-2002", name="Otro Deudor", invoices=[INVOICE])
    assert raised.value.field == "invoices.0.number"


def test_same_invoice_number_at_two_creditors_is_fine(db: Database, make_creditor: Callable[..., Creditor]) -> None:
    first, second = make_creditor(), make_creditor(slug="otra", name="Otra")
    upsert(db, first, invoices=[INVOICE])
    assert upsert(db, second, invoices=[INVOICE]) == (True, 1, 0)


def test_resending_an_invoice_without_balance_keeps_what_payments_left(db: Database, creditor: Creditor) -> None:
    upsert(db, creditor, invoices=[INVOICE])
    with db.session() as session:
        invoice = session.scalars(select(Invoice)).one()
        invoice.balance_minor = 10_000  # a payment was allocated since
        session.commit()
    upsert(db, creditor, invoices=[INVOICE])
    with db.session() as session:
        assert session.scalars(select(Invoice.balance_minor)).one() == 10_000


def test_resending_a_disputed_invoice_keeps_it_disputed(db: Database, creditor: Creditor) -> None:
    upsert(db, creditor, invoices=[INVOICE])
    with db.session() as session:
        session.scalars(select(Invoice)).one().status = "disputed"
        session.commit()
    upsert(db, creditor, invoices=[INVOICE | {"description": "changed"}])
    with db.session() as session:
        assert session.scalars(select(Invoice.status)).one() == "disputed"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"country": "XX"}, "country"),
        ({"locale": "en_US@" + "x" * 20}, "locale"),
        ({"invoices": [INVOICE | {"currency": "ABC"}]}, "invoices.0.currency"),
    ],
)
def test_unknown_codes_and_overlong_locales_are_rejected(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as raised:
        DebtorIn.model_validate({"external_ref": "C-1", "name": "Ana"} | fields)
    assert where in {".".join(str(part) for part in error["loc"]) for error in raised.value.errors()}


def test_astronomic_amounts_are_a_field_error_not_a_crash() -> None:
    with pytest.raises(FieldError) as raised:
        to_minor(Decimal("1e999999999"), "CLP", "invoices.0.amount")
    assert raised.value.field == "invoices.0.amount"


@pytest.mark.parametrize("raw", ["+52 1 55 1234 5678", "+5215512345678", "52 1 55 1234 5678"])
def test_the_old_mexican_mobile_prefix_is_dropped(raw: str) -> None:
    # WhatsApp still sends Mexican senders as +521...; the debtor is stored as +52..., and both must match.
    assert normalize_phone(raw, "MX") == "+525512345678"
