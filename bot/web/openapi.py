"""The REST API's contract: the pydantic models of every body and the OpenAPI 3.1 document built from them.

bot/web/api.py validates requests and shapes responses with exactly these models, so the published document
cannot drift from what the server does (tests/bot/web/test_openapi.py fuzzes the app against it).
"""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from babel import Locale, UnknownLocaleError
from babel.numbers import list_currencies
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from bot.debtors import CHANNELS, DebtorIn, InvoiceIn

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,63}$"
# No slash (it would end the path segment), no control characters, no surrounding blanks (bodies are stripped).
EXTERNAL_REF_PATTERN = r"^[^/\s\x00-\x1f\x7f]([^/\x00-\x1f\x7f]{0,98}[^/\s\x00-\x1f\x7f])?$"
SLUG_RE = re.compile(SLUG_PATTERN)
EXTERNAL_REF_RE = re.compile(EXTERNAL_REF_PATTERN)
CURRENCIES = frozenset(list_currencies())
COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS)
POLICY_MAX_DEPTH = 8
POLICY_MAX_BYTES = 64 * 1024


def _amount_schema(bound: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,20}(\.[0-9]{1,4})?$"},
                {"type": "number", bound: 0},
            ],
            "description": "Major units (45990 CLP, 120.50 USD) as a decimal string or a number",
        }
    )


# Exact decimals in major units, bounded so that no conversion to minor units can overflow.
AmountIn = Annotated[Decimal, Field(ge=0, max_digits=24, decimal_places=4), _amount_schema("minimum")]
PositiveAmountIn = Annotated[Decimal, Field(gt=0, max_digits=24, decimal_places=4), _amount_schema("exclusiveMinimum")]
Timestamp = Annotated[datetime, Field(description="UTC, ISO 8601")]


def _known(known: frozenset[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in known:
            raise ValueError(f"unknown {what} {value!r}")
        return value

    return AfterValidator(check)


CountryCode = Annotated[
    str,
    Field(pattern="^[A-Z]{2}$", description="ISO 3166-1 alpha-2", json_schema_extra={"enum": sorted(COUNTRIES)}),
    _known(COUNTRIES, "country"),
]
CurrencyCode = Annotated[
    str,
    Field(pattern="^[A-Z]{3}$", description="ISO 4217", json_schema_extra={"enum": sorted(CURRENCIES)}),
    _known(CURRENCIES, "currency"),
]


def valid_locale(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        Locale.parse(value.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown locale {value!r}") from exc
    return value


def valid_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


# ---------------------------------------------------------------------------------------------- requests


class CreditorUpsert(BaseModel):
    """A creditor; omitted optional fields keep their stored value (or get the instance default on create)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"name": "Aguas del Valle", "country": "CL", "currency": "CLP"}]},
    )

    name: Annotated[str, Field(min_length=1, max_length=200)]
    country: CountryCode = Field(description="ISO 3166-1 alpha-2; also the default phone region")
    currency: CurrencyCode = Field(description="ISO 4217 code of the portfolio's usual currency")
    default_locale: Annotated[str, Field(max_length=16)] | None = Field(None, description="es, en, es-CL, ...")
    timezone: Annotated[str, Field(max_length=64)] | None = Field(None, description="IANA, e.g. America/Santiago")
    verification_method: Literal["national_id_last4", "birth_date"] | None = None
    negotiation_policy: dict[str, Any] | None = Field(None, description="Replaces the stored policy when given")

    @field_validator("default_locale")
    @classmethod
    def _default_locale(cls, value: str | None) -> str | None:
        return valid_locale(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return valid_timezone(value)

    @field_validator("negotiation_policy")
    @classmethod
    def _policy(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        plain = plain_json(value, POLICY_MAX_DEPTH)
        if len(json.dumps(plain)) > POLICY_MAX_BYTES:
            raise ValueError(f"policy larger than {POLICY_MAX_BYTES} bytes")
        return plain


def plain_json(value: Any, max_depth: int, depth: int = 0) -> Any:
    """JSON with exact decimals turned into int/float for storage; refuses deep nesting and infinite numbers."""
    if depth > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    if isinstance(value, dict):
        return {key: plain_json(item, max_depth, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_json(item, max_depth, depth + 1) for item in value]
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and value.adjusted() < 18:
            return int(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("number out of range")
        return number
    return value


class InvoiceUpsert(InvoiceIn):
    """One invoice as the ERP has it; `number` identifies it within the creditor."""

    amount: AmountIn
    balance: AmountIn | None = Field(None, description="Amount still owed; defaults to amount")
    currency: CurrencyCode | None = Field(None, description="ISO 4217; defaults to the creditor's")


class DebtorUpsert(DebtorIn):
    """A debtor and their invoices; the path names the debtor. Omitted fields and invoices stay as stored."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Ana María Pérez",
                    "phone": "+56 9 6123 4567",
                    "email": "ana@example.cl",
                    "invoices": [{"number": "F-1", "amount": "45990", "due_date": "2026-12-05"}],
                }
            ]
        }
    )

    external_ref: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        None, description="Optional; when given it must equal the path's external_ref"
    )
    locale: Annotated[str, Field(max_length=16)] | None = Field(None, description="es, en, es-CL, es-MX, ...")
    timezone: Annotated[str, Field(max_length=64)] | None = Field(None, description="IANA, e.g. America/Santiago")
    country: CountryCode | None = Field(None, description="ISO 3166-1 alpha-2; the creditor's when omitted")
    channel_preference: list[Annotated[str, WithJsonSchema({"type": "string", "enum": list(CHANNELS)})]] | None = Field(
        None, description="Channels to try, in order"
    )
    invoices: list[InvoiceUpsert] = Field(default_factory=list, max_length=1000)


class PaymentIn(BaseModel):
    """A payment the creditor received; `reference` (the provider's payment id) makes retries safe."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"amount": "20000", "reference": "TRX-2026-000123"}]},
    )

    amount: PositiveAmountIn
    currency: CurrencyCode | None = Field(None, description="ISO 4217; defaults to the creditor's")
    reference: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="Provider payment id; sending the same reference again returns the first payment"
    )
    received_at: AwareDatetime | None = Field(None, description="With a UTC offset; defaults to now")
    invoice_number: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        None, description="Invoice to pay first; the rest goes to the oldest due invoices, then to credit"
    )

    @field_validator("received_at")
    @classmethod
    def _received_at(cls, value: datetime | None) -> datetime | None:
        # Bounded first so converting to UTC can never overflow the datetime range.
        if value is None:
            return None
        if not 1970 <= value.year <= 9998:
            raise ValueError("must be between 1970 and 9998")
        return value.astimezone(UTC)


class CasesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(None, pattern="^[a-z][a-z_]{0,15}$", description="open, pending, resolved, ...")
    kind: str | None = Field(None, pattern="^[a-z][a-z_]{0,23}$", description="dispute, handoff, hardship, ...")
    creditor: str | None = Field(None, pattern=SLUG_PATTERN, description="Creditor slug")
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class DebtorQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeline_limit: int = Field(200, ge=1, le=1000, description="Newest timeline entries to return")


# --------------------------------------------------------------------------------------------- responses


class FieldProblem(BaseModel):
    field: str = Field(description="Dotted path into the body, e.g. invoices.0.amount")
    reason: str


class ErrorOut(BaseModel):
    error: str = Field(description="Machine-readable code, e.g. validation_failed")
    message: str
    fields: list[FieldProblem] | None = None


class MoneyOut(BaseModel):
    currency: str
    amount: str = Field(description="Decimal string in major units")
    amount_minor: int


class CreditorOut(BaseModel):
    slug: str
    name: str
    country: str
    currency: str
    default_locale: str
    timezone: str
    verification_method: str
    negotiation_policy: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp


class InvoiceOut(BaseModel):
    number: str
    description: str | None
    currency: str
    amount: str
    amount_minor: int
    balance: str
    balance_minor: int
    issued_on: date | None
    due_date: date
    status: str


class TimelineMessage(BaseModel):
    type: Literal["message"] = "message"
    at: Timestamp
    id: int
    direction: str
    channel: str
    text: str = Field(description="The first 280 characters")
    template_key: str | None
    delivery_status: str
    intent: str | None


class TimelinePayment(BaseModel):
    type: Literal["payment"] = "payment"
    at: Timestamp
    id: int
    provider: str
    reference: str
    amount: str
    amount_minor: int
    currency: str
    status: str


class TimelinePromise(BaseModel):
    type: Literal["promise"] = "promise"
    at: Timestamp
    id: int
    amount: str
    amount_minor: int
    currency: str
    promised_date: date
    status: str


class TimelineCase(BaseModel):
    type: Literal["case"] = "case"
    at: Timestamp
    id: int
    kind: str
    status: str
    reason: str | None
    sla_due_at: Timestamp | None


class TimelineOptOut(BaseModel):
    type: Literal["opt_out"] = "opt_out"
    at: Timestamp
    id: int
    channel: str
    source: str
    revoked_at: Timestamp | None


class TimelineAudit(BaseModel):
    type: Literal["audit"] = "audit"
    at: Timestamp
    id: int
    actor: str
    action: str
    subject_type: str
    data: dict[str, Any]


TimelineItem = Annotated[
    TimelineMessage | TimelinePayment | TimelinePromise | TimelineCase | TimelineOptOut | TimelineAudit,
    Field(discriminator="type"),
]


class DebtorOut(BaseModel):
    creditor: str
    external_ref: str
    name: str
    phone: str | None
    email: str | None
    telegram_chat_id: str | None
    country: str | None
    locale: str
    timezone: str
    channel_preference: list[str]
    segment: str | None
    risk_score: float | None
    risk_factors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="What made the risk score: factor -> {value, points}"
    )
    balances: list[MoneyOut] = Field(description="Open balance per currency")
    invoices: list[InvoiceOut] = Field(description="Every invoice, oldest due first")
    timeline: list[TimelineItem] = Field(
        description="Messages, payments, promises, cases, opt-outs, audit; newest first"
    )


class AllocationOut(BaseModel):
    invoice_number: str | None = Field(description="null for credit on account")
    amount: str
    amount_minor: int


class PaymentOut(BaseModel):
    id: int
    creditor: str
    debtor_external_ref: str
    reference: str
    amount: str
    amount_minor: int
    currency: str
    received_at: Timestamp
    allocations: list[AllocationOut]


class CaseOut(BaseModel):
    id: int
    kind: str
    status: str
    debtor_external_ref: str
    creditor_slug: str
    reason: str | None
    sla_due_at: Timestamp | None
    created_at: Timestamp


class CaseList(BaseModel):
    total: int = Field(description="Cases matching the filters, ignoring limit and offset")
    limit: int
    offset: int
    cases: list[CaseOut]


class PortalLinkOut(BaseModel):
    url: str
    expires_at: Timestamp


# ---------------------------------------------------------------------------------------------- document

REF = "#/components/schemas/{model}"
ERROR_RESPONSES = {
    "400": ("BadRequest", "The body is not a JSON object (malformed JSON, wrong type, empty)"),
    "401": ("Unauthorized", "Missing or wrong `Authorization: Bearer <token>`"),
    "404": ("NotFound", "Unknown creditor or debtor"),
    "409": ("Conflict", "A concurrent request changed the same resource, or a payment reference is reused"),
    "413": ("PayloadTooLarge", "The body is larger than 5 MiB"),
    "422": ("Unprocessable", "Invalid fields; `fields` names each one as a dotted path"),
    "429": ("RateLimited", "Too many requests for this token (COBRABOT_API_RATE_LIMIT); see Retry-After"),
    "503": ("ApiDisabled", "No API token is configured (COBRABOT_API_TOKEN), so the API is off"),
}
SLUG_PARAM = {
    "name": "slug",
    "in": "path",
    "required": True,
    "description": "The creditor's slug",
    "schema": {"type": "string", "pattern": SLUG_PATTERN},
    "example": "aguas-andinas",
}
REF_PARAM = {
    "name": "external_ref",
    "in": "path",
    "required": True,
    "description": "The creditor's own id for the debtor (no slash)",
    "schema": {"type": "string", "pattern": EXTERNAL_REF_PATTERN},
    "example": "C-1001",
}
DEBTOR_PATH = "/creditors/{slug}/debtors/{external_ref}"


class _Components:
    """Collects model schemas under components/schemas, refusing two different schemas with one name."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=REF, mode=mode)
        for name, definition in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            if self.schemas.setdefault(name, definition) != definition:
                raise RuntimeError(f"two different schemas are both named {name}")
        return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One query parameter per model field; a query string has no null, so optional means absent."""
    schema = model.model_json_schema()
    parameters = []
    for name, prop in schema["properties"].items():
        branches = [branch for branch in prop.get("anyOf", [prop]) if branch.get("type") != "null"]
        (value_schema,) = branches
        value_schema = {key: item for key, item in value_schema.items() if key != "title"}
        if prop.get("default") is not None:
            value_schema["default"] = prop["default"]
        parameter = {"name": name, "in": "query", "required": False, "schema": value_schema}
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _operation(
    components: _Components,
    operation_id: str,
    summary: str,
    ok: dict[str, tuple[type[BaseModel], str]],
    errors: tuple[str, ...],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: type[BaseModel] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        code: _json(components.ref(model, "serialization"), description) for code, (model, description) in ok.items()
    }
    for code in ("401", "429", "503", *errors):
        responses[code] = {"$ref": f"#/components/responses/{ERROR_RESPONSES[code][0]}"}
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(components.ref(body, "validation"), body.__doc__ or "")}
    return operation


def _paths(components: _Components) -> dict[str, Any]:
    op = functools.partial(_operation, components)
    body_errors = ("400", "404", "409", "413", "422")
    return {
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document")},
            }
        },
        "/creditors/{slug}": {
            "put": op(
                "upsertCreditor",
                "Create or update a creditor",
                {"200": (CreditorOut, "Updated, or unchanged"), "201": (CreditorOut, "Created")},
                ("400", "409", "413", "422"),
                parameters=[SLUG_PARAM],
                body=CreditorUpsert,
            )
        },
        DEBTOR_PATH: {
            "put": op(
                "upsertDebtor",
                "Create or update a debtor and their invoices (idempotent)",
                {"200": (DebtorOut, "Updated, or unchanged"), "201": (DebtorOut, "Created")},
                body_errors,
                parameters=[SLUG_PARAM, REF_PARAM],
                body=DebtorUpsert,
            ),
            "get": op(
                "getDebtor",
                "A debtor with balances, invoices and timeline",
                {"200": (DebtorOut, "The debtor")},
                ("404", "422"),
                parameters=[SLUG_PARAM, REF_PARAM, *_query_parameters(DebtorQuery)],
            ),
        },
        f"{DEBTOR_PATH}/payments": {
            "post": op(
                "recordPayment",
                "Record a payment and allocate it to invoices (idempotent by reference)",
                {"200": (PaymentOut, "Already recorded with this reference"), "201": (PaymentOut, "Recorded")},
                body_errors,
                parameters=[SLUG_PARAM, REF_PARAM],
                body=PaymentIn,
            )
        },
        f"{DEBTOR_PATH}/portal-link": {
            "post": op(
                "issuePortalLink",
                "A fresh signed link to the debtor's self-service portal",
                {"200": (PortalLinkOut, "The link and when it expires")},
                ("404",),
                parameters=[SLUG_PARAM, REF_PARAM],
            )
        },
        "/cases": {
            "get": op(
                "listCases",
                "Cases (disputes, handoffs, hardship, ...), newest first",
                {"200": (CaseList, "One page of cases and the total")},
                ("404", "422"),
                parameters=_query_parameters(CasesQuery),
            )
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of /api/v1, built once per process."""
    components = _Components()
    paths = _paths(components)
    error = components.ref(ErrorOut, "serialization")
    responses = {name: _json(error, description) for name, description in ERROR_RESPONSES.values()}
    responses["Unauthorized"]["headers"] = {
        "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"},
    }
    responses["RateLimited"]["headers"] = {
        "Retry-After": {"schema": {"type": "string"}, "description": "Seconds until the limit resets"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cobrabot API",
            "version": "1.0.0",
            "description": "Creditors, debtors, invoices, payments and cases for ERPs and CRMs. "
            "Amounts are decimal strings in major units; *_minor fields are integer minor units.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "responses": responses,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The value of COBRABOT_API_TOKEN"}
            },
        },
    }
