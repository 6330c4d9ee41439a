"""Debtors and their invoices: validated input, idempotent upsert by external ref, balance.

Shared by the REST API, the CSV importer and the demo loader, so all three accept exactly the same data.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from babel import Locale, UnknownLocaleError
from babel.numbers import get_currency_precision, list_currencies
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.domain import ChannelName, Money
from bot.models import Creditor, Debtor, Invoice

CHANNELS = tuple(channel.value for channel in ChannelName)
KNOWN_CURRENCIES = frozenset(list_currencies())
KNOWN_COUNTRIES = frozenset(code for code in Locale("en").territories if len(code) == 2 and code.isalpha())
Text = Annotated[str, Field(min_length=1, max_length=200)]


class InvoiceIn(BaseModel):
    """One invoice as an ERP sends it: amounts in major units as decimal strings or numbers."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    number: Annotated[str, Field(min_length=1, max_length=100)]
    amount: Decimal = Field(ge=0, description="Invoice total in major units, e.g. 45990 CLP or 120.50 USD")
    balance: Decimal | None = Field(None, ge=0, description="Amount still owed; defaults to amount")
    currency: str | None = Field(None, pattern="^[A-Z]{3}$", description="ISO 4217; defaults to the creditor's")
    due_date: date
    issued_on: date | None = None
    description: Annotated[str, Field(max_length=500)] | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and value not in KNOWN_CURRENCIES:
            raise ValueError(f"unknown ISO 4217 currency code {value!r}")
        return value

    @model_validator(mode="after")
    def _balance_not_above_amount(self) -> InvoiceIn:
        if self.balance is not None and self.balance > self.amount:
            raise ValueError("balance cannot exceed amount")
        return self


class DebtorIn(BaseModel):
    """A debtor with contact data and invoices; `external_ref` is the creditor's own customer id."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    external_ref: Annotated[str, Field(min_length=1, max_length=100)]
    name: Text
    phone: str | None = Field(None, description="Any common format; stored as E.164")
    email: EmailStr | None = None
    telegram_chat_id: Annotated[str, Field(pattern=r"^-?\d{1,20}$")] | None = None
    locale: str | None = Field(None, max_length=16, description="es, en, es-CL, es-MX, en-US, ...")
    timezone: str | None = Field(None, description="IANA time zone, e.g. America/Santiago")
    country: str | None = Field(None, pattern="^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    channel_preference: list[str] | None = None
    national_id: Annotated[str, Field(min_length=4, max_length=32)] | None = None
    birth_date: date | None = None
    invoices: list[InvoiceIn] = Field(default_factory=list, max_length=1000)

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            Locale.parse(value.replace("-", "_"))
        except (UnknownLocaleError, ValueError) as exc:
            raise ValueError(f"unknown locale {value!r}") from exc
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is not None and value not in KNOWN_COUNTRIES:
            raise ValueError(f"unknown ISO 3166-1 country code {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("channel_preference")
    @classmethod
    def _channels(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [channel for channel in value if channel not in CHANNELS]
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; use {list(CHANNELS)}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _unique_invoice_numbers(self) -> DebtorIn:
        numbers = [invoice.number for invoice in self.invoices]
        if len(numbers) != len(set(numbers)):
            raise ValueError("invoice numbers must be unique within a debtor")
        return self


class FieldError(ValueError):
    """A value that passed the schema but not the creditor's rules (phone region, currency digits)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def normalize_phone(raw: str, region: str) -> str:
    """Any way people write a phone number -> E.164, or FieldError."""
    try:
        number = _without_mexican_mobile_prefix(phonenumbers.parse(raw, region))
    except phonenumbers.NumberParseException as exc:
        raise FieldError("phone", f"not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise FieldError("phone", f"not a valid phone number for region {region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _without_mexican_mobile_prefix(number: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber:
    """+52 1 55 1234 5678 -> +52 55 1234 5678. Mexico dropped the mobile "1" in 2019, but WhatsApp and old CRM
    exports still write it; without this the same debtor would have two numbers."""
    national = str(number.national_number)
    if number.country_code == 52 and len(national) == 11 and national.startswith("1"):
        stripped = phonenumbers.PhoneNumber(country_code=52, national_number=int(national[1:]))
        if phonenumbers.is_valid_number(stripped):
            return stripped
    return number


def canonical_phone(address: str) -> str:
    """An inbound sender's number in the form debtors are stored in (E.164); unparsable input is returned as is."""
    try:
        return normalize_phone(address, "ZZ")
    except FieldError:
        return address


def to_minor(amount: Decimal, currency: str, field: str) -> int:
    try:
        value = amount.scaleb(get_currency_precision(currency))
        whole = value.to_integral_value()
    except ArithmeticError as exc:  # InvalidOperation, Overflow: "NaN", "1e999999999"
        raise FieldError(field, "not a usable amount") from exc
    if value != whole:
        raise FieldError(field, f"{currency} allows {get_currency_precision(currency)} decimals")
    if value > 2**62:
        raise FieldError(field, "amount too large")
    return int(value)


def secret_hash(secret_key: str, purpose: str, value: str) -> str:
    """Keyed hash of identity data: verifiable on the debtor's answer, useless if the table leaks alone."""
    message = f"{purpose}:{value.strip().lower()}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def national_id_tail(national_id: str) -> str:
    """The last four digits of an id (what the bot asks for), ignoring dots, dashes and a check digit.

    A Chilean RUT's verifier after the dash (12.345.678-5, 12.345.678-K) is not part of the number people
    read out, so both give 5678.
    """
    number = re.sub(r"-\s*[0-9Kk]\s*$", "", national_id.strip())
    digits = "".join(ch for ch in number if ch.isdigit())
    return digits[-4:]


@dataclass(frozen=True, slots=True)
class UpsertResult:
    debtor: Debtor
    created: bool
    invoices_created: int
    invoices_updated: int


def upsert_debtor(
    session: Session,
    creditor: Creditor,
    data: DebtorIn,
    secret_key: str,
    existing: Debtor | None = None,
    known_invoices: Mapping[str, Invoice] | None = None,
) -> UpsertResult:
    """Create or update a debtor and its invoices by external ref; the same input twice changes nothing."""
    if existing is None:
        existing = session.scalars(
            select(Debtor).where(Debtor.creditor_id == creditor.id, Debtor.external_ref == data.external_ref)
        ).one_or_none()
    debtor = existing or Debtor(creditor=creditor, external_ref=data.external_ref, name=data.name)
    _apply_debtor_fields(debtor, creditor, data, secret_key)
    if existing is None:
        session.add(debtor)
    created, updated = _upsert_invoices(session, creditor, debtor, data.invoices, known_invoices)
    return UpsertResult(debtor, existing is None, created, updated)


def _apply_debtor_fields(debtor: Debtor, creditor: Creditor, data: DebtorIn, secret_key: str) -> None:
    region = data.country or creditor.country
    debtor.name = data.name
    debtor.country = data.country or debtor.country
    debtor.locale = data.locale or debtor.locale or creditor.default_locale
    debtor.timezone = data.timezone or debtor.timezone or creditor.timezone
    if data.phone is not None:
        debtor.phone = normalize_phone(data.phone, region)
    if data.email is not None:
        debtor.email = str(data.email).lower()
    if data.telegram_chat_id is not None:
        debtor.telegram_chat_id = data.telegram_chat_id
    if data.channel_preference is not None:
        debtor.channel_preference = data.channel_preference
    elif not debtor.channel_preference:
        debtor.channel_preference = ["whatsapp", "sms", "email"]
    if data.national_id is not None:
        debtor.national_id_hash = secret_hash(secret_key, "national_id", national_id_tail(data.national_id))
    if data.birth_date is not None:
        debtor.birth_date_hash = secret_hash(secret_key, "birth_date", data.birth_date.isoformat())


def _upsert_invoices(
    session: Session,
    creditor: Creditor,
    debtor: Debtor,
    invoices: list[InvoiceIn],
    known_invoices: Mapping[str, Invoice] | None,
) -> tuple[int, int]:
    if not invoices:
        return 0, 0
    known = known_invoices
    if known is None:
        # Always look: a new debtor may claim an invoice number another debtor already has.
        numbers = [invoice.number for invoice in invoices]
        rows = session.scalars(select(Invoice).where(Invoice.creditor_id == creditor.id, Invoice.number.in_(numbers)))
        known = {row.number: row for row in rows}
    created = updated = 0
    for index, data in enumerate(invoices):
        invoice = known.get(data.number)
        if invoice is not None and invoice.debtor_id != debtor.id:
            raise FieldError(f"invoices.{index}.number", "already belongs to another debtor")
        values = _invoice_values(creditor, data, index, invoice)
        if invoice is None:
            debtor.invoices.append(Invoice(creditor_id=creditor.id, number=data.number, **values))
            created += 1
        elif any(getattr(invoice, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(invoice, name, value)
            updated += 1
    return created, updated


def _invoice_values(creditor: Creditor, data: InvoiceIn, index: int, existing: Invoice | None) -> dict[str, Any]:
    currency = data.currency or creditor.currency
    amount = to_minor(data.amount, currency, f"invoices.{index}.amount")
    if data.balance is not None:
        balance = to_minor(data.balance, currency, f"invoices.{index}.balance")
    elif existing is not None:
        # No balance sent for a known invoice: keep what payments left of it, never undo them.
        balance = min(existing.balance_minor, amount)
    else:
        balance = amount
    status = "open" if balance > 0 else "paid"
    if existing is not None and existing.status not in ("open", "paid"):
        status = existing.status  # disputed, written off or cancelled stay so until a person decides
    return {
        "amount_minor": amount,
        "balance_minor": balance,
        "currency": currency,
        "due_date": data.due_date,
        "issued_on": data.issued_on,
        "description": data.description,
        "status": status,
    }


# What "still owed" means wherever invoices are queried (conversation facts, risk, planning, reports), and the
# order the bot speaks of them in.
OWED = (Invoice.status == "open", Invoice.balance_minor > 0)
OLDEST_DUE_FIRST = (Invoice.due_date, Invoice.id)


def open_invoices(session: Session, debtor_id: int) -> list[Invoice]:
    """Invoices still owed, oldest due first."""
    owed = select(Invoice).where(Invoice.debtor_id == debtor_id, *OWED).order_by(*OLDEST_DUE_FIRST)
    return list(session.scalars(owed))


def balances(invoices: list[Invoice]) -> list[Money]:
    """Total owed per currency (a debtor rarely owes in two, but it happens)."""
    totals: dict[str, int] = {}
    for invoice in invoices:
        totals[invoice.currency] = totals.get(invoice.currency, 0) + invoice.balance_minor
    return [Money(minor, currency) for currency, minor in sorted(totals.items())]
