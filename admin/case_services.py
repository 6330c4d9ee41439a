"""Console work on cases and debtors, free of Flask: the case queue and its outcomes (uphold with an adjustment or
a write-off, reject), and the debtor actions (send a payment link, pause collection, record an opt-out).

Every action runs under the debtor's lock and a row lock, in one transaction, and is audited as `agent:<id>`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import String, and_, cast, exists, func, or_, select, update
from sqlalchemy.orm import Session

from admin.services import Actor, ConsoleError, NotAllowed, NotFound, is_web_link, thread
from bot.audit import record
from bot.debtors import FieldError, balances, open_invoices, to_minor
from bot.domain import Clock, Money
from bot.effects import PAYMENT_LINK_LIFETIME
from bot.models import (
    Agent,
    AuditEvent,
    Case,
    ConsentOptOut,
    Conversation,
    Debtor,
    Invoice,
    Message,
    Payment,
    PaymentLink,
    PaymentPlan,
    PromiseToPay,
)
from bot.outreach import queue_bot_message
from bot.payments.links import create_link
from bot.portal import PortalTokens
from bot.store import ConversationLocks, Database, UnitOfWork

CASE_STATUSES = ("open", "resolved")
CASE_KINDS = ("dispute", "reconciliation", "hardship", "deceased", "bankruptcy", "handoff")
CLOSED = ("resolved", "closed", "cancelled")
REMEDIES = ("adjust", "write_off")
OPT_OUT_CHANNELS = ("sms", "whatsapp", "email", "telegram", "all")
DUE_SOON = timedelta(hours=24)
MAX_PAUSE = timedelta(days=366)


def sla_state(case: Case, now: datetime) -> str:
    """'met'/'missed' once resolved; 'overdue', 'due soon' (within 24 h) or 'on time' while open."""
    due = case.sla_due_at
    if case.status in CLOSED:
        return "missed" if due and case.resolved_at and case.resolved_at > due else "met"
    if due is None:
        return "on time"
    if now > due:
        return "overdue"
    return "due soon" if due - now <= DUE_SOON else "on time"


def list_cases(session: Session, status: str | None, kind: str | None, limit: int = 500) -> list[Case]:
    """Cases with the most urgent SLA first; cases without an SLA last."""
    statement = select(Case)
    if status:
        statement = statement.where(Case.status == status)
    if kind:
        statement = statement.where(Case.kind == kind)
    order = (Case.sla_due_at.is_(None), Case.sla_due_at, Case.id)
    return list(session.scalars(statement.order_by(*order).limit(limit)))


def evidence(session: Session, case: Case) -> list[Message]:
    """The conversation the case came from, oldest first: what the debtor said and sent."""
    if case.conversation_id is None:
        return []
    return thread(session, case.conversation_id)


def attachments(messages: list[Message]) -> list[str]:
    """Every http(s) media link in the evidence, in the order it arrived (other schemes are never links)."""
    return [url for message in messages for url in message.media or [] if isinstance(url, str) and is_web_link(url)]


def parse_amount(raw: str, currency: str) -> int:
    """A plain decimal in major units ('45990', '123.45'), as typed in the form, to minor units."""
    try:
        return to_minor(Decimal(raw.strip()), currency, "new_balance")
    except (InvalidOperation, FieldError) as exc:
        raise ConsoleError(f"the new balance is not a valid {currency} amount") from exc


def search_debtors(session: Session, query: str, limit: int = 50) -> list[Debtor]:
    """Debtors whose name, external reference or email contains `query`, or whose phone contains its digits."""
    query = query.strip()[:200]
    if not query:
        return []
    pattern = f"%{_escape_like(query.lower())}%"
    matches = [
        func.lower(Debtor.name).like(pattern, escape="\\"),
        func.lower(Debtor.external_ref).like(pattern, escape="\\"),
        func.lower(Debtor.email).like(pattern, escape="\\"),
    ]
    digits = "".join(ch for ch in query if ch.isdigit())
    if len(digits) >= 4:  # "9 6123 4567" finds +56961234567; fewer digits would match half the portfolio
        matches.append(Debtor.phone.like(f"%{digits}%"))
    return list(session.scalars(select(Debtor).where(or_(*matches)).order_by(Debtor.name, Debtor.id).limit(limit)))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class DebtorView:
    """Everything the 360 page shows about one debtor, read in one session."""

    debtor: Debtor
    invoices: list[Invoice]
    balances: list[Money]
    plans: list[PaymentPlan]
    promises: list[PromiseToPay]
    payments: list[Payment]
    messages: list[Message]
    opt_outs: list[ConsentOptOut]
    audit: list[AuditEvent]
    cases: list[Case]


def debtor_view(session: Session, debtor_id: int, limit: int = 500) -> DebtorView | None:
    debtor = session.get(Debtor, debtor_id)
    if debtor is None:
        return None
    invoices = list(session.scalars(select(Invoice).where(Invoice.debtor_id == debtor_id).order_by(Invoice.due_date)))
    return DebtorView(
        debtor=debtor,
        invoices=invoices,
        balances=balances(open_invoices(session, debtor_id)),
        plans=_newest(session, PaymentPlan, PaymentPlan.created_at, debtor_id, limit),
        promises=_newest(session, PromiseToPay, PromiseToPay.created_at, debtor_id, limit),
        payments=_newest(session, Payment, Payment.received_at, debtor_id, limit),
        messages=_newest(session, Message, Message.created_at, debtor_id, limit),
        opt_outs=_newest(session, ConsentOptOut, ConsentOptOut.created_at, debtor_id, limit),
        audit=debtor_audit(session, debtor_id, limit),
        cases=_newest(session, Case, Case.created_at, debtor_id, limit),
    )


def _newest(session: Session, model: Any, at: Any, debtor_id: int, limit: int) -> list[Any]:
    statement = select(model).where(model.debtor_id == debtor_id).order_by(at.desc(), model.id.desc()).limit(limit)
    return list(session.scalars(statement))


# The audit subjects that belong to a debtor, by the name `bot.audit.record` gives each model.
_OWNED_SUBJECTS: dict[str, Any] = {
    "invoice": Invoice,
    "case": Case,
    "conversation": Conversation,
    "paymentplan": PaymentPlan,
    "promisetopay": PromiseToPay,
    "payment": Payment,
    "paymentlink": PaymentLink,
    "consentoptout": ConsentOptOut,
    "message": Message,
}


def debtor_audit(session: Session, debtor_id: int, limit: int = 500) -> list[AuditEvent]:
    """Events about the debtor and about anything of theirs (invoices, cases, links, opt-outs...), newest first."""
    about = [and_(AuditEvent.subject_type == "debtor", AuditEvent.subject_id == str(debtor_id))]
    for subject_type, model in _OWNED_SUBJECTS.items():
        ids = select(cast(model.id, String)).where(model.debtor_id == debtor_id)
        about.append(and_(AuditEvent.subject_type == subject_type, AuditEvent.subject_id.in_(ids)))
    statement = select(AuditEvent).where(or_(*about)).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
    return list(session.scalars(statement.limit(limit)))


@dataclass
class CaseDesk:
    """What an agent does to a case and to a debtor's account."""

    database: Database
    locks: ConversationLocks
    clock: Clock
    portal: PortalTokens

    @contextmanager
    def _debtor_locked(self, debtor_id: int) -> Iterator[tuple[UnitOfWork, Debtor]]:
        # One key per debtor: two agents resolving cases of the same account never interleave.
        with self.locks.hold(f"debtor:{debtor_id}"), self.database.unit_of_work() as uow:
            statement = select(Debtor).where(Debtor.id == debtor_id)
            if self.database.dialect == "postgresql":
                statement = statement.with_for_update()
            debtor = uow.session.scalars(statement.execution_options(populate_existing=True)).one_or_none()
            if debtor is None:
                raise NotFound(f"debtor {debtor_id} not found")
            yield uow, debtor

    @contextmanager
    def _case_locked(self, case_id: int) -> Iterator[tuple[UnitOfWork, Case]]:
        with self.database.session() as session:
            debtor_id = session.scalar(select(Case.debtor_id).where(Case.id == case_id))
        if debtor_id is None:
            raise NotFound(f"case {case_id} not found")
        with self._debtor_locked(debtor_id) as (uow, _debtor):
            statement = select(Case).where(Case.id == case_id)
            if self.database.dialect == "postgresql":
                statement = statement.with_for_update()
            yield uow, uow.session.scalars(statement.execution_options(populate_existing=True)).one()

    # --- cases ----------------------------------------------------------------------------------------

    def take(self, case_id: int, actor: Actor) -> None:
        with self._case_locked(case_id) as (uow, case):
            _require_open(case)
            _require_may_act(case, actor, "this case is already assigned to another agent")
            previous, case.assignee_id = case.assignee_id, actor.id
            record(uow.session, actor.name, "case.taken", case, previous_agent_id=previous)
            uow.commit()

    def assign(self, case_id: int, actor: Actor, agent_id: int | None) -> None:
        if not actor.at_least("manager"):
            raise NotAllowed("only managers can reassign cases")
        with self._case_locked(case_id) as (uow, case):
            _require_open(case)
            if agent_id is not None:
                target = uow.session.get(Agent, agent_id)
                if target is None or not target.active:
                    raise ConsoleError("no active agent with that id")
            previous, case.assignee_id = case.assignee_id, agent_id
            record(uow.session, actor.name, "case.assigned", case, agent_id=agent_id, previous=previous)
            uow.commit()

    def uphold(
        self, case_id: int, actor: Actor, remedy: str, invoice_id: int | None = None, new_balance: str = ""
    ) -> None:
        """The debtor is right: correct one invoice's balance, or write the disputed debt off. Resolves the case."""
        if remedy not in REMEDIES:
            raise ConsoleError("choose whether to adjust the balance or write the debt off")
        with self._case_locked(case_id) as (uow, case):
            session = uow.session
            _require_open(case)
            _require_may_act(case, actor, "this case is assigned to another agent")
            if remedy == "adjust":
                changes = _adjust(session, case, actor, invoice_id or case.invoice_id, new_balance)
            else:
                changes = _write_off(session, case, actor)
            changes |= _reopen_disputed(session, case)
            _resolve(case, actor, "upheld", self.clock())
            record(session, actor.name, "case.resolved", case, outcome="upheld", remedy=remedy, invoices=changes)
            uow.commit()

    def reject(self, case_id: int, actor: Actor) -> None:
        """The debt stands: disputed invoices go back to open, so reminders and the bot collect them again."""
        with self._case_locked(case_id) as (uow, case):
            _require_open(case)
            _require_may_act(case, actor, "this case is assigned to another agent")
            changes = _reopen_disputed(uow.session, case)
            _resolve(case, actor, "rejected", self.clock())
            record(uow.session, actor.name, "case.resolved", case, outcome="rejected", invoices=changes)
            uow.commit()

    # --- debtors --------------------------------------------------------------------------------------

    def send_payment_link(self, debtor_id: int, actor: Actor) -> int:
        """A settlement link for everything owed, queued to the debtor on a channel they accept; the message id."""
        now = self.clock()
        with self._debtor_locked(debtor_id) as (uow, debtor):
            session = uow.session
            totals = balances(open_invoices(session, debtor.id))
            if not totals:
                raise ConsoleError("the debtor owes nothing collectible (disputed invoices are not included)")
            if len(totals) > 1:
                raise ConsoleError("the debtor owes in more than one currency: a settlement link covers one")
            link = create_link(
                session, self.portal, debtor, totals[0], "settlement", now=now, lifetime=PAYMENT_LINK_LIFETIME
            )
            queued = queue_bot_message(
                session, debtor, "payment_link_sent", {"amount": totals[0], "link": link.url}, now
            )
            if queued.message_id is None:
                raise ConsoleError(f"nothing was sent: {queued.reason}")
            record(session, actor.name, "payment_link.sent_by_agent", debtor, link_id=link.id,
                   message_id=queued.message_id, channel=queued.channel, amount_minor=link.amount_minor)  # fmt: skip
            uow.commit()
            return queued.message_id

    def pause_collection(self, debtor_id: int, actor: Actor, until: date) -> datetime:
        """No reminders or bot outreach until the start of `until` in the debtor's time zone."""
        now = self.clock()
        with self._debtor_locked(debtor_id) as (uow, debtor):
            resume_at = datetime.combine(until, time.min, tzinfo=_zone(debtor.timezone)).astimezone(UTC)
            if resume_at <= now:
                raise ConsoleError("the pause must end in the future")
            if resume_at - now > MAX_PAUSE:
                raise ConsoleError("a pause can last at most a year")
            before = debtor.collection_paused_until
            debtor.collection_paused_until = resume_at
            record(uow.session, actor.name, "debtor.collection_paused", debtor, until=resume_at.isoformat(),
                   previous=before.isoformat() if before else None)  # fmt: skip
            uow.commit()
            return resume_at

    def record_opt_out(self, debtor_id: int, actor: Actor, channel: str) -> None:
        if channel not in OPT_OUT_CHANNELS:
            raise ConsoleError(f"channel must be one of {', '.join(OPT_OUT_CHANNELS)}")
        with self._debtor_locked(debtor_id) as (uow, debtor):
            session = uow.session
            active = exists().where(
                ConsentOptOut.debtor_id == debtor.id,
                ConsentOptOut.channel == channel,
                ConsentOptOut.revoked_at.is_(None),
            )
            if session.scalar(select(active)):
                raise ConsoleError(f"the debtor has already opted out of {channel}")
            opt_out = ConsentOptOut(debtor_id=debtor.id, channel=channel, source="agent", created_at=self.clock())
            session.add(opt_out)
            record(session, actor.name, "consent.opted_out", opt_out, channel=channel, debtor_id=debtor.id)
            uow.commit()


def _adjust(session: Session, case: Case, actor: Actor, invoice_id: int | None, new_balance: str) -> dict[str, str]:
    invoice = session.get(Invoice, invoice_id) if invoice_id else None
    if invoice is None or invoice.debtor_id != case.debtor_id:
        raise ConsoleError("choose which of the debtor's invoices to adjust")
    if invoice.status not in ("open", "disputed"):
        raise ConsoleError(f"invoice {invoice.number} is {invoice.status}; only an open or disputed one changes")
    minor = parse_amount(new_balance, invoice.currency)
    if minor < 0 or minor > invoice.amount_minor:
        raise ConsoleError("the new balance must be between zero and the invoice's amount")
    before = invoice.balance_minor
    invoice.balance_minor = minor
    # A corrected balance is collected again; a balance corrected to nothing is not owed at all.
    invoice.status = "open" if minor > 0 else "cancelled"
    record(session, actor.name, "invoice.adjusted", invoice, case_id=case.id,
           balance_before=before, balance_after=minor)  # fmt: skip
    return {invoice.number: f"balance {before} -> {minor}"}


def _write_off(session: Session, case: Case, actor: Actor) -> dict[str, str]:
    """The case's invoice, or (a dispute names none) every invoice the dispute froze."""
    if case.invoice_id is not None:
        targets = [session.get_one(Invoice, case.invoice_id)]
    else:
        targets = list(
            session.scalars(select(Invoice).where(Invoice.debtor_id == case.debtor_id, Invoice.status == "disputed"))
        )
    if not targets:
        raise ConsoleError("there is no disputed invoice to write off")
    changes = {}
    for invoice in targets:
        if invoice.status in ("paid", "cancelled", "written_off"):
            raise ConsoleError(f"invoice {invoice.number} is already {invoice.status}")
        before, invoice.balance_minor, invoice.status = invoice.balance_minor, 0, "written_off"
        record(session, actor.name, "invoice.written_off", invoice, case_id=case.id,
               balance_before=before)  # fmt: skip
        changes[invoice.number] = "written_off"
    return changes


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _require_open(case: Case) -> None:
    if case.status in CLOSED:
        raise ConsoleError(f"this case is already {case.status}")


def _require_may_act(case: Case, actor: Actor, refusal: str) -> None:
    if case.assignee_id not in (None, actor.id) and not actor.at_least("manager"):
        raise NotAllowed(refusal)
    if case.assignee_id is None:
        case.assignee_id = actor.id  # whoever decides an unassigned case owns it


def _resolve(case: Case, actor: Actor, outcome: str, now: datetime) -> None:
    case.status, case.outcome, case.resolved_at = "resolved", outcome, now


def _reopen_disputed(session: Session, case: Case) -> dict[str, str]:
    """Disputed invoices resume collection, unless another open dispute of the same debtor still holds them."""
    other_dispute = exists().where(
        Case.debtor_id == case.debtor_id, Case.kind == "dispute", Case.id != case.id, Case.status.not_in(CLOSED)
    )
    if session.scalar(select(other_dispute)):
        return {}
    numbers = list(
        session.scalars(select(Invoice.number).where(Invoice.debtor_id == case.debtor_id, Invoice.status == "disputed"))
    )
    session.execute(
        update(Invoice)
        .where(Invoice.debtor_id == case.debtor_id, Invoice.status == "disputed")
        .values(status="open")
        .execution_options(synchronize_session="fetch")
    )
    return dict.fromkeys(numbers, "open")
