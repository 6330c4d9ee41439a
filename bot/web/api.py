"""REST API v1 for ERPs and CRMs: creditors, debtors with invoices, payments, cases and portal links.

Every request is one unit of work that is committed only when the whole request succeeded, so a rejected
request writes nothing. Bodies are checked completely (JSON, storable text, schema, the creditor's rules)
before anything is written. The contract lives in bot/web/openapi.py.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy import String, and_, cast, func, inspect, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import audit
from bot.campaigns import queued_reminder_preview
from bot.debtors import FieldError, balances, open_invoices, to_minor, upsert_debtor
from bot.domain import Money
from bot.models import (
    AuditEvent,
    Case,
    ConsentOptOut,
    Creditor,
    Debtor,
    Invoice,
    Message,
    Payment,
    PromiseToPay,
)
from bot.payments.allocation import ReceivedPayment, ReferenceConflict, record_payment
from bot.services import Services
from bot.web import openapi
from bot.web.errors import field_error, json_error, validation_error
from bot.web.openapi import (
    EXTERNAL_REF_RE,
    SLUG_RE,
    AllocationOut,
    CaseList,
    CaseOut,
    CasesQuery,
    CreditorOut,
    CreditorUpsert,
    DebtorOut,
    DebtorQuery,
    DebtorUpsert,
    InvoiceOut,
    MoneyOut,
    PaymentIn,
    PaymentOut,
    PortalLinkOut,
    TimelineAudit,
    TimelineCase,
    TimelineItem,
    TimelineMessage,
    TimelineOptOut,
    TimelinePayment,
    TimelinePromise,
)

logger = logging.getLogger(__name__)
blueprint = Blueprint("api", __name__)

ACTOR = "api"
PROVIDER = "api"
MESSAGE_SUMMARY_CHARS = 280
# A payment "received" further ahead than this is a client bug (a wrong year or zone), not clock skew.
FUTURE_TOLERANCE = timedelta(days=1)
Model = TypeVar("Model", bound=BaseModel)


class Rejected(Exception):
    """Ends a request with an error response; the unit of work rolls back on the way out."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def services() -> Services:
    return current_app.extensions["cobrabot"]


@blueprint.errorhandler(Rejected)
def _rejected(exc: Rejected) -> Response:
    return exc.response


@blueprint.errorhandler(FieldError)
def _field_error(exc: FieldError) -> Response:
    return field_error(exc.field, exc.reason)


@blueprint.errorhandler(IntegrityError)
def _conflict(exc: IntegrityError) -> Response:
    logger.warning("api write conflict on %s: %s", request.endpoint, type(exc.orig).__name__)
    return json_error(409, "conflict", "a concurrent request changed the same data; retry the request")


@blueprint.before_request
def _authenticate() -> Response | None:
    if request.endpoint == "api.openapi_document":
        return None
    expected = services().settings.api_token
    if not expected:
        return json_error(503, "api_disabled", "the API is disabled: set COBRABOT_API_TOKEN to enable it")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Bytes, because compare_digest refuses non-ASCII str and headers may carry any Latin-1 text.
    if scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogatepass"), expected.encode("utf-8")
    ):
        return None
    response = json_error(401, "unauthorized", "send the API token as 'Authorization: Bearer <token>'")
    response.headers["WWW-Authenticate"] = 'Bearer realm="cobrabot"'
    return response


@blueprint.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document())


# ----------------------------------------------------------------------------------------------- input


def _reject(status: int, error: str, message: str) -> NoReturn:
    raise Rejected(json_error(status, error, message))


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def json_body() -> dict[str, Any]:
    """The body as a JSON object with exact decimals, or a 400/422 naming what is wrong with it."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        _reject(400, "bad_request", "expected a JSON object body")
    try:
        payload = json.loads(raw, parse_float=Decimal, parse_constant=_no_constants)
    except RecursionError:
        _reject(400, "malformed_json", "the JSON body is nested too deeply")
    except ValueError as exc:
        _reject(400, "malformed_json", f"the body is not valid JSON: {exc}")
    if not isinstance(payload, dict):
        _reject(400, "bad_request", f"expected a JSON object, got {type(payload).__name__}")
    bad = unstorable_text(payload)
    if bad:
        reason = "text cannot contain NUL characters or unpaired surrogates"
        problems = [{"field": path, "reason": reason} for path in bad]
        raise Rejected(json_error(422, "validation_failed", "the request body has invalid fields", problems))
    return payload


def unstorable_text(payload: Any) -> list[str]:
    """Dotted paths of strings (keys too) a database cannot store: NUL (PostgreSQL) or lone surrogates."""
    bad: list[str] = []
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        path, value = stack.pop()
        items: list[tuple[Any, Any]] = []
        if isinstance(value, str) and not _storable(value):
            bad.append(path or "body")
        elif isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value))
        for key, item in items:
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and not _storable(key):
                bad.append(child)
            stack.append((child, item))
    return sorted(bad)


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Rejected(validation_error(exc)) from None


def record_audit(session: Session, action: str, subject: object, **data: Any) -> None:
    """An audit event by the API, stamped with the service clock like everything else the request writes."""
    audit.record(session, ACTOR, action, subject, **data).occurred_at = services().clock()


def _respond(model: BaseModel, status: int) -> tuple[Response, int]:
    return jsonify(model.model_dump(mode="json")), status


# ----------------------------------------------------------------------------------------------- lookups


def find_creditor(session: Session, slug: str) -> Creditor | None:
    if not SLUG_RE.fullmatch(slug):
        return None
    return session.scalars(select(Creditor).where(Creditor.slug == slug)).one_or_none()


def find_debtor(session: Session, creditor: Creditor, external_ref: str, *, lock: bool = False) -> Debtor | None:
    if not EXTERNAL_REF_RE.fullmatch(external_ref):
        return None
    statement = select(Debtor).where(Debtor.creditor_id == creditor.id, Debtor.external_ref == external_ref)
    if lock:
        # Serialises payments per debtor on PostgreSQL; SQLite's write transaction already does.
        statement = statement.with_for_update()
    return session.scalars(statement).one_or_none()


def creditor_or_404(session: Session, slug: str) -> Creditor:
    creditor = find_creditor(session, slug)
    if creditor is None:
        _reject(404, "not_found", f"no creditor {slug!r}")
    return creditor


def debtor_or_404(session: Session, slug: str, external_ref: str, *, lock: bool = False) -> Debtor:
    debtor = find_debtor(session, creditor_or_404(session, slug), external_ref, lock=lock)
    if debtor is None:
        _reject(404, "not_found", f"no debtor {external_ref!r} for creditor {slug!r}")
    return debtor


# ------------------------------------------------------------------------------------------- creditors


@blueprint.put("/creditors/<slug>")
def put_creditor(slug: str) -> tuple[Response, int]:
    if not SLUG_RE.fullmatch(slug):
        raise FieldError("slug", "must be 2-64 lowercase letters, digits or dashes, starting with a letter or digit")
    data = parse(CreditorUpsert, json_body())
    svc = services()
    with svc.database.unit_of_work() as uow:
        creditor = find_creditor(uow.session, slug)
        created = creditor is None
        if creditor is None:
            creditor = Creditor(
                slug=slug,
                default_locale=svc.settings.default_locale,
                timezone=svc.settings.default_timezone,
                verification_method="national_id_last4",
                negotiation_policy={},
            )
            uow.add(creditor)
        changed = _apply(creditor, data.model_dump(exclude_none=True))
        if created or changed:
            record_audit(uow.session, "creditor.created" if created else "creditor.updated", creditor, fields=changed)
            uow.commit()
        return _respond(creditor_out(creditor), 201 if created else 200)


def _apply(row: Creditor, values: dict[str, Any]) -> list[str]:
    """Set each value that differs; the names of the changed fields, sorted."""
    changed = []
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed.append(name)
    return sorted(changed)


def creditor_out(creditor: Creditor) -> CreditorOut:
    return CreditorOut.model_validate(creditor, from_attributes=True)


# --------------------------------------------------------------------------------------------- debtors


@blueprint.put("/creditors/<slug>/debtors/<external_ref>")
def put_debtor(slug: str, external_ref: str) -> tuple[Response, int]:
    svc = services()
    with svc.database.unit_of_work() as uow:
        session = uow.session
        creditor = creditor_or_404(session, slug)
        if not EXTERNAL_REF_RE.fullmatch(external_ref):
            raise FieldError("external_ref", "1-100 characters, no slash, control characters or surrounding blanks")
        body = parse(DebtorUpsert, json_body())
        if body.external_ref is not None and body.external_ref != external_ref:
            raise FieldError("external_ref", "differs from the external_ref in the path")
        data = body.model_copy(update={"external_ref": external_ref})
        existing = find_debtor(session, creditor, external_ref)
        before = _columns(existing)
        if existing is None:
            _refuse_foreign_invoices(session, creditor, data)
        result = upsert_debtor(session, creditor, data, svc.settings.secret_key, existing=existing)
        if result.created or result.invoices_created or result.invoices_updated or _columns(result.debtor) != before:
            action = "debtor.created" if result.created else "debtor.updated"
            record_audit(
                session,
                action,
                result.debtor,
                invoices_created=result.invoices_created,
                invoices_updated=result.invoices_updated,
            )
            uow.commit()
        return _respond(
            debtor_out(session, result.debtor, DebtorQuery().timeline_limit), 201 if result.created else 200
        )


def _columns(debtor: Debtor | None) -> dict[str, Any] | None:
    """The debtor's stored values, to tell a real change from a repeat of the same upsert."""
    if debtor is None:
        return None
    return {attr.key: getattr(debtor, attr.key) for attr in inspect(Debtor).column_attrs if attr.key != "updated_at"}


def _refuse_foreign_invoices(session: Session, creditor: Creditor, data: DebtorUpsert) -> None:
    # upsert_debtor only checks invoice ownership for debtors it already knows; a new debtor naming another
    # debtor's invoice would otherwise fail on the unique key at commit instead of as a clear 422.
    numbers = [invoice.number for invoice in data.invoices]
    taken = set(
        session.scalars(select(Invoice.number).where(Invoice.creditor_id == creditor.id, Invoice.number.in_(numbers)))
    )
    for index, number in enumerate(numbers):
        if number in taken:
            raise FieldError(f"invoices.{index}.number", "already belongs to another debtor")


@blueprint.get("/creditors/<slug>/debtors/<external_ref>")
def get_debtor(slug: str, external_ref: str) -> tuple[Response, int]:
    query = parse(DebtorQuery, request.args.to_dict())
    with services().database.unit_of_work() as uow:
        debtor = debtor_or_404(uow.session, slug, external_ref)
        return _respond(debtor_out(uow.session, debtor, query.timeline_limit), 200)


def debtor_out(session: Session, debtor: Debtor, timeline_limit: int) -> DebtorOut:
    invoices = session.scalars(
        select(Invoice).where(Invoice.debtor_id == debtor.id).order_by(Invoice.due_date, Invoice.id)
    ).all()
    return DebtorOut(
        creditor=debtor.creditor.slug,
        external_ref=debtor.external_ref,
        name=debtor.name,
        phone=debtor.phone,
        email=debtor.email,
        telegram_chat_id=debtor.telegram_chat_id,
        country=debtor.country,
        locale=debtor.locale,
        timezone=debtor.timezone,
        channel_preference=debtor.channel_preference,
        segment=debtor.segment,
        risk_score=debtor.risk_score,
        risk_factors=debtor.risk_factors or {},
        balances=[money_out(money) for money in balances(open_invoices(session, debtor.id))],
        invoices=[invoice_out(invoice) for invoice in invoices],
        timeline=timeline(session, debtor, timeline_limit),
    )


def decimal_text(minor: int, currency: str) -> str:
    return f"{Money(minor, currency).amount:f}"


def money_out(money: Money) -> MoneyOut:
    return MoneyOut(currency=money.currency, amount=decimal_text(money.minor, money.currency), amount_minor=money.minor)


def invoice_out(invoice: Invoice) -> InvoiceOut:
    return InvoiceOut(
        number=invoice.number,
        description=invoice.description,
        currency=invoice.currency,
        amount=decimal_text(invoice.amount_minor, invoice.currency),
        amount_minor=invoice.amount_minor,
        balance=decimal_text(invoice.balance_minor, invoice.currency),
        balance_minor=invoice.balance_minor,
        issued_on=invoice.issued_on,
        due_date=invoice.due_date,
        status=invoice.status,
    )


def timeline(session: Session, debtor: Debtor, limit: int) -> list[TimelineItem]:
    """Everything that happened to the debtor, newest first: each source's newest `limit`, merged and cut."""
    items: list[TimelineItem] = [
        *_messages(session, debtor, limit),
        *_payments(session, debtor.id, limit),
        *(
            TimelinePromise(
                at=p.created_at,
                id=p.id,
                amount=decimal_text(p.amount_minor, p.currency),
                amount_minor=p.amount_minor,
                currency=p.currency,
                promised_date=p.promised_date,
                status=p.status,
            )
            for p in _newest(session, PromiseToPay, PromiseToPay.created_at, debtor.id, limit)
        ),
        *(
            TimelineCase(
                at=c.created_at, id=c.id, kind=c.kind, status=c.status, reason=c.reason, sla_due_at=c.sla_due_at
            )
            for c in _newest(session, Case, Case.created_at, debtor.id, limit)
        ),
        *(
            TimelineOptOut(at=o.created_at, id=o.id, channel=o.channel, source=o.source, revoked_at=o.revoked_at)
            for o in _newest(session, ConsentOptOut, ConsentOptOut.created_at, debtor.id, limit)
        ),
        *_audit_events(session, debtor.id, limit),
    ]
    items.sort(key=lambda item: (item.at, item.type, item.id), reverse=True)
    return items[:limit]


def _newest(session: Session, model: Any, at: Any, debtor_id: int, limit: int) -> list[Any]:
    return list(
        session.scalars(
            select(model).where(model.debtor_id == debtor_id).order_by(at.desc(), model.id.desc()).limit(limit)
        )
    )


def _messages(session: Session, debtor: Debtor, limit: int) -> list[TimelineMessage]:
    now = services().clock()
    return [
        TimelineMessage(
            at=m.created_at,
            id=m.id,
            direction=m.direction,
            channel=m.channel,
            # A planned reminder has no words until the dispatcher sends it: show them as they would go out now.
            text=queued_reminder_preview(session, m, debtor, now)[:MESSAGE_SUMMARY_CHARS],
            template_key=m.template_key,
            delivery_status=m.delivery_status,
            intent=m.intent,
        )
        for m in _newest(session, Message, Message.created_at, debtor.id, limit)
    ]


def _payments(session: Session, debtor_id: int, limit: int) -> list[TimelinePayment]:
    return [
        TimelinePayment(
            at=p.received_at,
            id=p.id,
            provider=p.provider,
            reference=p.provider_payment_id,
            amount=decimal_text(p.amount_minor, p.currency),
            amount_minor=p.amount_minor,
            currency=p.currency,
            status=p.status,
        )
        for p in _newest(session, Payment, Payment.received_at, debtor_id, limit)
    ]


def _audit_events(session: Session, debtor_id: int, limit: int) -> list[TimelineAudit]:
    payment_ids = select(cast(Payment.id, String)).where(Payment.debtor_id == debtor_id)
    about_debtor = or_(
        and_(AuditEvent.subject_type == "debtor", AuditEvent.subject_id == str(debtor_id)),
        and_(AuditEvent.subject_type == "payment", AuditEvent.subject_id.in_(payment_ids)),
    )
    events = session.scalars(
        select(AuditEvent)
        .where(about_debtor)
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        .limit(limit)
    )
    return [
        TimelineAudit(
            at=e.occurred_at, id=e.id, actor=e.actor, action=e.action, subject_type=e.subject_type, data=e.data
        )
        for e in events
    ]


# -------------------------------------------------------------------------------------------- payments


@blueprint.post("/creditors/<slug>/debtors/<external_ref>/payments")
def post_payment(slug: str, external_ref: str) -> tuple[Response, int]:
    svc = services()
    with svc.database.unit_of_work() as uow:
        debtor = debtor_or_404(uow.session, slug, external_ref, lock=True)
        data = parse(PaymentIn, json_body())
        currency = data.currency or debtor.creditor.currency
        amount = Money(to_minor(data.amount, currency, "amount"), currency)
        if amount.minor <= 0:
            raise FieldError("amount", f"must be at least one minor unit of {currency}")
        now = svc.clock()
        received_at = data.received_at or now
        if received_at > now + FUTURE_TOLERANCE:
            raise FieldError("received_at", "is in the future")
        received = ReceivedPayment(
            PROVIDER, data.reference, amount, received_at, data.invoice_number, raw=data.model_dump(mode="json")
        )
        try:
            recorded = record_payment(uow.session, debtor, received, ACTOR, now)
        except ReferenceConflict as exc:
            _reject(409, "reference_conflict", str(exc))
        uow.commit()
        return _respond(payment_out(uow.session, recorded.payment, debtor), 201 if recorded.created else 200)


def payment_out(session: Session, payment: Payment, debtor: Debtor) -> PaymentOut:
    invoice_ids = [a.invoice_id for a in payment.allocations if a.invoice_id is not None]
    rows = session.execute(select(Invoice.id, Invoice.number).where(Invoice.id.in_(invoice_ids))).tuples()
    numbers = {invoice_id: number for invoice_id, number in rows}
    return PaymentOut(
        id=payment.id,
        creditor=debtor.creditor.slug,
        debtor_external_ref=debtor.external_ref,
        reference=payment.provider_payment_id,
        amount=decimal_text(payment.amount_minor, payment.currency),
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        received_at=payment.received_at,
        allocations=[
            AllocationOut(
                invoice_number=numbers.get(a.invoice_id) if a.invoice_id is not None else None,
                amount=decimal_text(a.amount_minor, payment.currency),
                amount_minor=a.amount_minor,
            )
            for a in sorted(payment.allocations, key=lambda a: a.id)
        ],
    )


# ----------------------------------------------------------------------------------- cases and portal


@blueprint.get("/cases")
def list_cases() -> tuple[Response, int]:
    query = parse(CasesQuery, request.args.to_dict())
    with services().database.unit_of_work() as uow:
        session = uow.session
        statement = (
            select(Case, Debtor.external_ref, Creditor.slug)
            .join(Debtor, Case.debtor_id == Debtor.id)
            .join(Creditor, Debtor.creditor_id == Creditor.id)
        )
        if query.creditor is not None:
            statement = statement.where(Creditor.id == creditor_or_404(session, query.creditor).id)
        if query.status is not None:
            statement = statement.where(Case.status == query.status)
        if query.kind is not None:
            statement = statement.where(Case.kind == query.kind)
        total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        rows = session.execute(
            statement.order_by(Case.created_at.desc(), Case.id.desc()).limit(query.limit).offset(query.offset)
        ).tuples()
        cases = [
            CaseOut(
                id=case.id,
                kind=case.kind,
                status=case.status,
                debtor_external_ref=external_ref,
                creditor_slug=slug,
                reason=case.reason,
                sla_due_at=case.sla_due_at,
                created_at=case.created_at,
            )
            for case, external_ref, slug in rows
        ]
        return _respond(CaseList(total=total, limit=query.limit, offset=query.offset, cases=cases), 200)


@blueprint.post("/creditors/<slug>/debtors/<external_ref>/portal-link")
def post_portal_link(slug: str, external_ref: str) -> tuple[Response, int]:
    svc = services()
    with svc.database.unit_of_work() as uow:
        debtor = debtor_or_404(uow.session, slug, external_ref)
        token, expires_at = svc.portal.issue(debtor.id, svc.portal_link_lifetime, now=svc.clock())
        record_audit(uow.session, "portal_link.issued", debtor, expires_at=expires_at.isoformat())
        uow.commit()
    return _respond(PortalLinkOut(url=svc.portal.url(token), expires_at=expires_at), 200)
