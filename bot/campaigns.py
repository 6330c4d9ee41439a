"""Reminder campaigns: cadences of steps at day offsets from the due date, and planning them in bulk.

`plan_reminders()` walks the debtors in keyset pages; per page it finds the cadence step each open debt is due
for, claims it with INSERT ... ON CONFLICT DO NOTHING on UNIQUE(invoice_id, step_key) (so racing schedulers plan
a step once), and queues ONE message per debtor and run covering all of that debtor's newly due debts: one
statement per page on PostgreSQL, a fixed handful on SQLite. Messages are queued without words; the dispatcher
writes them as it sends (`reminder_text`), after the compliance gate has decided.
Rules for leaving and re-entering the sequence are in docs/campaigns.md.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import bindparam, exists, func, insert, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session, aliased

from bot.audit import record
from bot.debtors import OWED
from bot.domain import ChannelName, Money
from bot.models import (
    Cadence,
    Case,
    ConsentOptOut,
    Conversation,
    Debtor,
    Installment,
    Invoice,
    Message,
    Outbox,
    PaymentPlan,
    PromiseToPay,
    ScheduledReminder,
    payment_plan_invoices,
)
from bot.outreach import ADDRESS_OF
from bot.templates import TemplateRenderer, default_templates

logger = logging.getLogger(__name__)
REMINDER_HOUR = time(10, 0)
CLOSED_CASE_STATUSES = ("resolved", "closed", "cancelled")
MISSED_RANK = 10_000  # a missed installment outranks every cadence step when choosing the message's template
INSTALLMENT_TEMPLATE = "reminder_installment_due"
MISSED_TEMPLATE = "reminder_installment_missed"
# Web chat is in by default but only ever chosen for a debtor with an open portal chat (see choose_channel).
ALL_CHANNELS = tuple(channel.value for channel in ChannelName)


class Step(BaseModel):
    """One cadence step: `template` sent `offset_days` after the due date (negative = before) on `channels`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$")]  # no ":" -- those keys are for installments
    offset_days: Annotated[int, Field(ge=-60, le=365)]
    template: Annotated[str, Field(min_length=1, max_length=100)]
    channels: tuple[ChannelName, ...] = tuple(ChannelName(name) for name in ALL_CHANNELS)

    @field_validator("template")
    @classmethod
    def _template_exists(cls, value: str) -> str:
        missing = [language for language in ("es", "en") if value not in default_templates(language)]
        if missing:
            raise ValueError(f"template {value!r} is missing in {', '.join(missing)}")
        return value


class CadenceSpec(BaseModel):
    """A validated cadence: unique keys, offsets strictly increasing, every template in both locales."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: Annotated[tuple[Step, ...], Field(min_length=1, max_length=30)]

    @model_validator(mode="after")
    def _keys_unique_offsets_sorted(self) -> CadenceSpec:
        keys = [step.key for step in self.steps]
        if len(set(keys)) != len(keys):
            raise ValueError("step keys must be unique")
        offsets = [step.offset_days for step in self.steps]
        if any(a >= b for a, b in pairwise(offsets)):
            raise ValueError("step offsets must be strictly increasing")
        return self


def validate_cadence(steps: Sequence[Any]) -> CadenceSpec:
    """Validate a cadence's steps (as stored in Cadence.steps or posted by the console); raises ValidationError."""
    return CadenceSpec.model_validate({"steps": list(steps)})


DEFAULT_CADENCE = validate_cadence(
    [
        {"key": "pre3", "offset_days": -3, "template": "reminder_before_due"},
        {"key": "due", "offset_days": 0, "template": "reminder_due_today"},
        {"key": "od3", "offset_days": 3, "template": "reminder_overdue"},
        {"key": "od7", "offset_days": 7, "template": "reminder_overdue"},
        {"key": "od15", "offset_days": 15, "template": "reminder_overdue"},
        {"key": "od30", "offset_days": 30, "template": "reminder_overdue"},
    ]
)


def step_due_at(due_date: date, offset_days: int, zone: ZoneInfo) -> datetime:
    """10:00 on due date + offset, on the debtor's wall clock, as aware UTC."""
    return datetime.combine(due_date + timedelta(days=offset_days), REMINDER_HOUR, zone).astimezone(UTC)


def latest_due_step(spec: CadenceSpec, due_date: date, zone: ZoneInfo, now: datetime) -> tuple[Step, datetime] | None:
    """The last step whose moment has come: a debt that enters late skips the steps it missed."""
    due = None
    for step in spec.steps:
        at = step_due_at(due_date, step.offset_days, zone)
        if at > now:
            break
        due = (step, at)
    return due


class Cadences:
    """The active cadences by (creditor, segment); falls back to the creditor's "default", then DEFAULT_CADENCE."""

    def __init__(self, rows: Iterable[tuple[int, str, list[Any]]]) -> None:
        self.by_key = {(creditor_id, segment): validate_cadence(steps) for creditor_id, segment, steps in rows}

    @classmethod
    def load(cls, session: Session) -> Cadences:
        rows = session.execute(select(Cadence.creditor_id, Cadence.segment, Cadence.steps).where(Cadence.active))
        return cls(rows.tuples())

    def for_debtor(self, creditor_id: int, segment: str | None) -> CadenceSpec:
        return (
            self.by_key.get((creditor_id, segment or "default"))
            or self.by_key.get((creditor_id, "default"))
            or DEFAULT_CADENCE
        )

    @property
    def max_lead_days(self) -> int:
        return max(-min(step.offset_days for step in spec.steps) for spec in (DEFAULT_CADENCE, *self.by_key.values()))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A reminder to claim, with what its message needs."""

    invoice_id: int
    debtor_id: int
    step_key: str
    due_at: datetime
    template: str
    channels: tuple[str, ...]
    rank: int  # the highest rank in a debtor's group picks the template
    family: str  # "debt" (cadence + missed installment) or "installment": one message per debtor and family
    currency: str  # one message per (debtor, family, currency)


@dataclass
class PlanReport:
    planned: int = 0
    queued: int = 0
    skipped: int = 0
    messages: int = 0
    missed_installments: int = 0
    by_step: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in ("planned", "queued", "skipped", "messages", "missed_installments")}


def plan_reminders(
    session: Session,
    now: datetime,
    *,
    batch_size: int = 1000,
    creditor_id: int | None = None,
    commit_pages: bool = False,
) -> PlanReport:
    """Plan and queue every reminder due by `now`; safe to run again and from two schedulers at once.

    `creditor_id` limits the run to one creditor's debtors (a Celery worker's share of the fan-out).
    `commit_pages` commits after each page (the jobs do): a million-debtor run is then many short transactions
    instead of one that holds locks and WAL for minutes, the dispatcher can send the first pages' reminders
    while later ones are planned, and a crash loses one page, which the next run plans (each step once).
    Debts are read a page of debtors at a time (keyset on debtor id), so memory stays flat however large the
    portfolio. On PostgreSQL each page is ONE statement (PG_PLAN_PAGE): selection, claim and queue in SQL; on
    SQLite the page's candidates are found in Python and claimed and queued with a handful of multi-row
    statements. Messages are queued with their template and no text: the dispatcher writes it when it sends.
    """
    report = PlanReport()
    # Installment notices are few; they join their debtor's page so a debtor still gets one message per run.
    notices = mark_missed_installments(session, now, report, creditor_id)
    notices += installment_candidates(session, now, creditor_id)
    extra: dict[int, list[Candidate]] = defaultdict(list)
    for candidate in notices:
        extra[candidate.debtor_id].append(candidate)
    cadences = Cadences.load(session)
    moments = StepMoments()
    pg = PgPlanner(session, cadences, now, creditor_id) if session.get_bind().dialect.name == "postgresql" else None
    for after, up_to in debtor_pages(session, batch_size, creditor_id):
        page_notices = [c for debtor_id in list(extra) if after < debtor_id <= up_to for c in extra.pop(debtor_id)]
        if pg is not None:
            pg.plan_page((after, up_to), page_notices, report)
        else:
            batch = cadence_candidates(session, now, cadences, (after, up_to), moments, creditor_id) + page_notices
            batch.sort(key=lambda c: (c.debtor_id, c.invoice_id, c.step_key))
            claimed = claim(session, batch, now)
            report.planned += len(claimed)
            queue_messages(session, claimed, now, report)
        if commit_pages:
            session.commit()
    logger.info("planned reminders: %s", report.as_dict())
    return report


# --- who is due --------------------------------------------------------------------------------------------


def _excluded_debtor(debtor_id: Any) -> Any:
    """Debtors out of every sequence: opted out of all channels, a dispute open, or a promise pending."""
    disputed = aliased(Invoice)
    return (
        exists().where(
            ConsentOptOut.debtor_id == debtor_id, ConsentOptOut.channel == "all", ConsentOptOut.revoked_at.is_(None)
        )
        | exists().where(Case.debtor_id == debtor_id, Case.kind == "dispute", Case.status.not_in(CLOSED_CASE_STATUSES))
        | exists().where(disputed.debtor_id == debtor_id, disputed.status == "disputed")
        | exists().where(PromiseToPay.debtor_id == debtor_id, PromiseToPay.status == "pending")
    )


class StepMoments:
    """(cadence, zone, due date) -> each step's send moment: a portfolio has few distinct keys, so converting
    wall-clock times once per key instead of once per debt takes most of the arithmetic out of planning."""

    def __init__(self) -> None:
        self._zones: dict[str, ZoneInfo] = {}
        self._moments: dict[tuple[int, str, date], tuple[tuple[Step, datetime], ...]] = {}

    def latest_due(
        self, spec: CadenceSpec, zone_name: str, due_date: date, now: datetime
    ) -> tuple[Step, datetime] | None:
        key = (id(spec), zone_name, due_date)
        moments = self._moments.get(key)
        if moments is None:
            zone = self._zones.setdefault(zone_name, ZoneInfo(zone_name))
            moments = tuple((step, step_due_at(due_date, step.offset_days, zone)) for step in spec.steps)
            self._moments[key] = moments
        due = None
        for step, at in moments:
            if at > now:
                break
            due = (step, at)
        return due


def debtor_pages(session: Session, size: int, creditor_id: int | None = None) -> Iterator[tuple[int, int]]:
    """(after, up_to) debtor-id ranges of about `size` debtors: keyset pagination, no OFFSET, no id list in memory."""
    after = 0
    while True:
        query = select(Debtor.id).where(Debtor.id > after).order_by(Debtor.id).limit(size)
        if creditor_id is not None:
            query = query.where(Debtor.creditor_id == creditor_id)
        ids = session.scalars(query).all()
        if not ids:
            return
        yield after, ids[-1]
        after = ids[-1]


def cadence_candidates(
    session: Session,
    now: datetime,
    cadences: Cadences,
    page: tuple[int, int],
    moments: StepMoments | None = None,
    creditor_id: int | None = None,
) -> list[Candidate]:
    """Open debts of the page's debtors, outside an active plan, whose latest due step is later than any step
    already planned for them."""
    moments = moments or StepMoments()
    in_active_plan = exists().where(
        payment_plan_invoices.c.invoice_id == Invoice.id,
        payment_plan_invoices.c.plan_id == PaymentPlan.id,
        PaymentPlan.status == "active",
    )
    # Correlated per invoice: served by UNIQUE(invoice_id, step_key), unlike a GROUP BY over the whole table.
    last_due_at = (
        select(func.max(ScheduledReminder.due_at))
        .where(ScheduledReminder.invoice_id == Invoice.id, ~ScheduledReminder.step_key.contains(":"))
        .scalar_subquery()
    )
    horizon = now.date() + timedelta(days=cadences.max_lead_days + 1)
    after, up_to = page
    rows = session.execute(
        select(
            Invoice.id, Invoice.debtor_id, Invoice.creditor_id, Invoice.due_date, Invoice.currency, Debtor.timezone,
            Debtor.segment, last_due_at,
        )
        .join(Debtor, Debtor.id == Invoice.debtor_id)
        .where(
            Invoice.debtor_id > after,
            Invoice.debtor_id <= up_to,
            *OWED,
            Invoice.due_date <= horizon,
            ~in_active_plan,
            ~_excluded_debtor(Invoice.debtor_id),
            *([Invoice.creditor_id == creditor_id] if creditor_id is not None else []),
        )
    )  # fmt: skip
    found = []
    for invoice_id, debtor_id, creditor_id, due_date, currency, zone_name, segment, last_at in rows:
        due = moments.latest_due(cadences.for_debtor(creditor_id, segment), zone_name, due_date, now)
        if due is None or (last_at is not None and _aware(last_at) >= due[1]):
            continue
        step, at = due
        found.append(
            Candidate(invoice_id, debtor_id, step.key, at, step.template, tuple(c.value for c in step.channels),
                      step.offset_days, "debt", currency)
        )  # fmt: skip
    return found


def _aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _plan_invoice_ids(session: Session, plan_ids: Iterable[int]) -> dict[int, list[int]]:
    by_plan: dict[int, list[int]] = defaultdict(list)
    rows = session.execute(
        select(payment_plan_invoices.c.plan_id, payment_plan_invoices.c.invoice_id)
        .where(payment_plan_invoices.c.plan_id.in_(list(plan_ids)))
        .order_by(payment_plan_invoices.c.invoice_id)
    )
    for plan_id, invoice_id in rows:
        by_plan[plan_id].append(invoice_id)
    return by_plan


def _pending_installments(
    session: Session, now: datetime, creditor_id: int | None
) -> list[tuple[Installment, PaymentPlan, Debtor]]:
    of_creditor = [Debtor.creditor_id == creditor_id] if creditor_id is not None else []
    rows = session.execute(
        select(Installment, PaymentPlan, Debtor)
        .join(PaymentPlan, PaymentPlan.id == Installment.plan_id)
        .join(Debtor, Debtor.id == PaymentPlan.debtor_id)
        .where(
            PaymentPlan.status == "active",
            Installment.status == "pending",
            Installment.paid_minor < Installment.amount_minor,
            Installment.due_date <= now.date() + timedelta(days=1),
            *of_creditor,
        )
        .order_by(Installment.id)
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


def installment_candidates(session: Session, now: datetime, creditor_id: int | None = None) -> list[Candidate]:
    """Installments of active plans due today (debtor's calendar) whose 10:00 has come."""
    due = []
    for installment, plan, debtor in _pending_installments(session, now, creditor_id):
        zone = ZoneInfo(debtor.timezone)
        at = step_due_at(installment.due_date, 0, zone)
        if at <= now and now.astimezone(zone).date() == installment.due_date:
            due.append((installment, plan, at))
    invoices = _plan_invoice_ids(session, {plan.id for _, plan, _ in due})
    excluded = _excluded_debtors(session, {plan.debtor_id for _, plan, _ in due})
    return [
        Candidate(invoices[plan.id][0], plan.debtor_id, f"inst:{installment.id}:due", at, INSTALLMENT_TEMPLATE,
                  ALL_CHANNELS, 0, "installment", plan.currency)
        for installment, plan, at in due
        if invoices.get(plan.id) and plan.debtor_id not in excluded
    ]  # fmt: skip


def _remaining(installment: Installment, currency: str) -> Money:
    return Money(installment.amount_minor - installment.paid_minor, currency)


def _excluded_debtors(session: Session, debtor_ids: set[int]) -> set[int]:
    if not debtor_ids:
        return set()
    return set(session.scalars(select(Debtor.id).where(Debtor.id.in_(debtor_ids), _excluded_debtor(Debtor.id))))


def mark_missed_installments(
    session: Session, now: datetime, report: PlanReport, creditor_id: int | None = None
) -> list[Candidate]:
    """Installments past their due day unpaid become "missed"; their plan "broken"; the debts re-enter the
    sequence at once with a missed-installment notice (the flag the risk score reads is the missed row)."""
    missed = [
        (installment, plan, debtor)
        for installment, plan, debtor in _pending_installments(session, now, creditor_id)
        if now.astimezone(ZoneInfo(debtor.timezone)).date() > installment.due_date
    ]
    candidates: list[Candidate] = []
    broken_plans: dict[int, PaymentPlan] = {}
    for installment, plan, _debtor in missed:
        installment.status = "missed"
        record(session, "system", "installment.missed", installment, plan_id=plan.id, seq=installment.seq)
        broken_plans[plan.id] = plan
    report.missed_installments = len(missed)
    for plan in broken_plans.values():
        plan.status = "broken"
        record(session, "system", "plan.broken", plan)
    first_missed = {plan_id: next(i for i, p, _ in missed if p.id == plan_id) for plan_id in broken_plans}
    for invoice in _open_invoices_of_plans(session, list(broken_plans)):
        plan_id, inv = invoice
        candidates.append(
            Candidate(inv.id, inv.debtor_id, f"missed:inst:{first_missed[plan_id].id}", now, MISSED_TEMPLATE,
                      ALL_CHANNELS, MISSED_RANK, "debt", inv.currency)
        )  # fmt: skip
    session.flush()
    excluded = _excluded_debtors(session, {c.debtor_id for c in candidates})
    return [c for c in candidates if c.debtor_id not in excluded]


def _open_invoices_of_plans(session: Session, plan_ids: list[int]) -> list[tuple[int, Invoice]]:
    if not plan_ids:
        return []
    rows = session.execute(
        select(payment_plan_invoices.c.plan_id, Invoice)
        .join(Invoice, Invoice.id == payment_plan_invoices.c.invoice_id)
        .where(payment_plan_invoices.c.plan_id.in_(plan_ids), *OWED)
    )
    return [(plan_id, invoice) for plan_id, invoice in rows]


# --- claim and queue: SQLite ---------------------------------------------------------------------------------


def claim(session: Session, batch: Sequence[Candidate], now: datetime) -> list[tuple[int, Candidate]]:
    """Insert the batch's reminder rows; only the rows this call inserted come back (the others were planned)."""
    if not batch:
        return []
    by_key = {(c.invoice_id, c.step_key): c for c in batch}
    values = [
        {"invoice_id": c.invoice_id, "debtor_id": c.debtor_id, "step_key": c.step_key, "due_at": c.due_at,
         "status": "planned", "created_at": now}
        for c in batch
    ]  # fmt: skip
    # Core executemany on the table (not the ORM entity): one cached statement that SQLAlchemy's
    # insertmanyvalues sends as multi-row INSERTs, without building an ORM state per row.
    table = ScheduledReminder.__table__
    statement = (
        sqlite.insert(table)
        .on_conflict_do_nothing(index_elements=["invoice_id", "step_key"])
        .returning(table.c.id, table.c.invoice_id, table.c.step_key)
    )
    return [
        (row_id, by_key[(invoice_id, step_key)]) for row_id, invoice_id, step_key in session.execute(statement, values)
    ]


@dataclass(frozen=True, slots=True)
class Recipient:
    debtor: Any  # a row with the Debtor columns a reminder needs (id, addresses, channel preference)
    opted_out: frozenset[str]
    conversations: dict[str, int]


def _recipients(session: Session, debtor_ids: set[int]) -> dict[int, Recipient]:
    """The batch's debtors with their opt-outs and open conversations: three queries per batch, not per debtor."""
    ids = list(debtor_ids)
    opted: dict[int, set[str]] = defaultdict(set)
    for debtor_id, channel in session.execute(
        select(ConsentOptOut.debtor_id, ConsentOptOut.channel).where(
            ConsentOptOut.debtor_id.in_(ids), ConsentOptOut.revoked_at.is_(None)
        )
    ):
        opted[debtor_id].add(channel)
    conversations: dict[int, dict[str, int]] = defaultdict(dict)
    for debtor_id, channel, conversation_id in session.execute(
        select(Conversation.debtor_id, Conversation.channel, func.max(Conversation.id))
        .where(Conversation.debtor_id.in_(ids), Conversation.mode != "closed")
        .group_by(Conversation.debtor_id, Conversation.channel)
    ):
        conversations[debtor_id][channel] = conversation_id
    rows = session.execute(
        select(Debtor.id, Debtor.channel_preference, Debtor.phone, Debtor.email, Debtor.telegram_chat_id).where(
            Debtor.id.in_(ids)
        )
    )
    return {row.id: Recipient(row, frozenset(opted[row.id]), conversations[row.id]) for row in rows}


def choose_channel(recipient: Recipient, allowed: Sequence[str]) -> str | None:
    """The debtor's first preferred channel the step allows, with an address and no opt-out.

    Web chat has no address to send to: it is reachable while the debtor has an open portal chat, where the
    reminder appears in the conversation. (PG_PLAN_PAGE makes the same choice in SQL.)
    """
    if "all" in recipient.opted_out:
        return None
    debtor = recipient.debtor
    for channel in debtor.channel_preference or ["sms"]:
        if channel not in allowed or channel in recipient.opted_out:
            continue
        if channel == "webchat":
            if "webchat" in recipient.conversations:
                return channel
        elif ADDRESS_OF.get(channel, lambda _d: None)(debtor):
            return channel
    return None


def queue_messages(
    session: Session, claimed: Sequence[tuple[int, Candidate]], now: datetime, report: PlanReport
) -> None:
    """One message per (debtor, family, currency) for the claimed reminders; mark them queued or skipped.

    The message goes in with an empty body: the dispatcher writes it when it sends (`reminder_text`).
    """
    if not claimed:
        return
    groups: dict[tuple[int, str, str], list[tuple[int, Candidate]]] = defaultdict(list)
    for row_id, candidate in claimed:
        groups[(candidate.debtor_id, candidate.family, candidate.currency)].append((row_id, candidate))
    recipients = _recipients(session, {key[0] for key in groups})
    messages: list[dict[str, Any]] = []
    members_of: list[list[int]] = []
    skipped: list[int] = []
    for (debtor_id, _family, _currency), members in groups.items():
        recipient = recipients[debtor_id]
        lead = max((candidate for _, candidate in members), key=lambda c: c.rank)
        channel = choose_channel(recipient, lead.channels)
        if channel is None:
            skipped += [row_id for row_id, _ in members]
            continue
        messages.append(
            {"conversation_id": recipient.conversations.get(channel), "debtor_id": debtor_id, "direction": "out",
             "channel": channel, "body": "", "template_key": lead.template, "delivery_status": "queued",
             "created_at": now, "media": []}
        )  # fmt: skip
        members_of.append([row_id for row_id, _ in members])
    outbox_ids = _insert_messages_and_outbox(session, messages, now)
    updates = [_row(row_id, "skipped", None, "no reachable channel") for row_id in skipped]
    for outbox_id, row_ids in zip(outbox_ids, members_of, strict=True):
        updates += [_row(row_id, "queued", outbox_id, None) for row_id in row_ids]
    report.messages += len(messages)
    report.queued += sum(len(row_ids) for row_ids in members_of)
    report.skipped += len(skipped)
    if updates:
        table = ScheduledReminder.__table__
        statement = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(status=bindparam("new_status"), outbox_id=bindparam("new_outbox_id"), reason=bindparam("why"))
        )
        session.execute(statement, updates)


def _insert_messages_and_outbox(session: Session, messages: list[dict[str, Any]], now: datetime) -> list[int]:
    """Multi-row inserts of the messages and their outbox rows; the outbox ids in the order of `messages`.

    RETURNING rows carry no promise of order (and asking SQLAlchemy to sort them makes SQLite insert row by
    row), so each statement holds at most one message per debtor and the returned (id, debtor_id) pairs say
    which message got which id; a debtor with two messages in a run (two currencies) takes a second round.
    """
    if not messages:
        return []
    message_table, outbox_table = Message.__table__, Outbox.__table__
    message_ids: list[int | None] = [None] * len(messages)
    pending = list(range(len(messages)))
    while pending:
        round_of: dict[int, int] = {}
        later = []
        for position in pending:
            debtor_id = messages[position]["debtor_id"]
            if debtor_id in round_of:
                later.append(position)
            else:
                round_of[debtor_id] = position
        statement = insert(message_table).returning(message_table.c.id, message_table.c.debtor_id)
        for message_id, debtor_id in session.execute(statement, [messages[p] for p in round_of.values()]):
            message_ids[round_of[debtor_id]] = message_id
        pending = later
    outbox = [
        {"message_id": message_id, "channel": message["channel"], "initiated_by": "bot", "status": "pending",
         "attempts": 0, "next_attempt_at": now, "created_at": now}
        for message_id, message in zip(message_ids, messages, strict=True)
    ]  # fmt: skip
    statement = insert(outbox_table).returning(outbox_table.c.id, outbox_table.c.message_id)
    outbox_of = {message_id: outbox_id for outbox_id, message_id in session.execute(statement, outbox)}
    return [outbox_of[message_id] for message_id in message_ids]  # type: ignore[index]


def _row(row_id: int, status: str, outbox_id: int | None, reason: str | None) -> dict[str, Any]:
    return {"row_id": row_id, "new_status": status, "new_outbox_id": outbox_id, "why": reason}


# --- claim and queue: PostgreSQL, one statement per page -------------------------------------------------------

# Everything a page needs, in one statement the server plans once: which step each open debt is due for (the
# step moments from the debtor's zone with AT TIME ZONE), the page's installment notices (passed in as arrays),
# one message per (debtor, family, currency) with the lead step's template and the first reachable preferred
# channel, and the writes. Message and outbox ids are drawn from their sequences up front so that each reminder
# row goes in once, already `queued` with its outbox id (or `skipped`), instead of being inserted and updated;
# a message and its outbox row are written only for groups of which this run claimed at least one reminder
# (ON CONFLICT DO NOTHING: a racing scheduler's rows come back to neither). The foreign keys between the three
# inserts are checked at the end of the statement, when all of them are in.
PG_PLAN_PAGE = text("""
WITH specs AS MATERIALIZED (
    SELECT * FROM unnest(CAST(:spec_ids AS integer[]), CAST(:spec_creditors AS integer[]),
                         CAST(:spec_segments AS text[])) AS s(spec_id, creditor_id, segment)
), steps AS MATERIALIZED (
    SELECT t.spec_id, t.step_key, t.offset_days, t.template, string_to_array(t.channels, ',') AS channels
    FROM unnest(CAST(:step_specs AS integer[]), CAST(:step_keys AS text[]), CAST(:step_offsets AS integer[]),
                CAST(:step_templates AS text[]), CAST(:step_channels AS text[]))
         AS t(spec_id, step_key, offset_days, template, channels)
), debts AS (
    SELECT i.id AS invoice_id, i.debtor_id, i.due_date, i.currency, d.timezone,
           COALESCE(by_segment.spec_id, by_default.spec_id, 0) AS spec_id,
           -- the last day whose 10:00 has passed on the debtor's clock: a step is due once due date + offset
           -- is no later than that
           CAST(CAST(:now AS timestamptz) AT TIME ZONE d.timezone - INTERVAL '10 hours' AS date) AS reached
    FROM invoices AS i
    JOIN debtors AS d ON d.id = i.debtor_id
    LEFT JOIN specs AS by_segment
           ON by_segment.creditor_id = i.creditor_id AND by_segment.segment = COALESCE(NULLIF(d.segment, ''), 'default')
    LEFT JOIN specs AS by_default ON by_default.creditor_id = i.creditor_id AND by_default.segment = 'default'
    WHERE i.debtor_id > CAST(:after AS integer) AND i.debtor_id <= CAST(:up_to AS integer)
      AND d.id > CAST(:after AS integer) AND d.id <= CAST(:up_to AS integer)  -- a range of the key, not a scan
      AND (CAST(:creditor_id AS integer) IS NULL OR i.creditor_id = CAST(:creditor_id AS integer))
      AND i.status = 'open' AND i.balance_minor > 0 AND i.due_date <= CAST(:horizon AS date)
      AND NOT EXISTS (SELECT 1 FROM payment_plan_invoices AS ppi JOIN payment_plans AS pp ON pp.id = ppi.plan_id
                      WHERE ppi.invoice_id = i.id AND pp.status = 'active')
      AND NOT EXISTS (SELECT 1 FROM consent_opt_outs AS o
                      WHERE o.debtor_id = i.debtor_id AND o.channel = 'all' AND o.revoked_at IS NULL)
      AND NOT EXISTS (SELECT 1 FROM cases AS k WHERE k.debtor_id = i.debtor_id AND k.kind = 'dispute'
                      AND k.status NOT IN ('resolved', 'closed', 'cancelled'))
      AND NOT EXISTS (SELECT 1 FROM invoices AS x WHERE x.debtor_id = i.debtor_id AND x.status = 'disputed')
      AND NOT EXISTS (SELECT 1 FROM promises_to_pay AS p WHERE p.debtor_id = i.debtor_id AND p.status = 'pending')
), due AS (
    SELECT b.invoice_id, b.debtor_id, st.step_key,
           ((b.due_date + st.offset_days) + TIME '10:00') AT TIME ZONE b.timezone AS due_at,
           st.template, st.channels, st.offset_days AS rank, 'debt' AS family, CAST(b.currency AS text) AS currency
    FROM debts AS b
    CROSS JOIN LATERAL (
        SELECT * FROM steps AS t WHERE t.spec_id = b.spec_id AND b.due_date + t.offset_days <= b.reached
        ORDER BY t.offset_days DESC LIMIT 1
    ) AS st
), candidates AS (
    SELECT * FROM due
    WHERE due.due_at > COALESCE(
        (SELECT max(r.due_at) FROM scheduled_reminders AS r
         WHERE r.invoice_id = due.invoice_id AND r.step_key NOT LIKE '%:%'),
        '-infinity')
    UNION ALL
    SELECT n.invoice_id, n.debtor_id, n.step_key, n.due_at, n.template, string_to_array(n.channels, ','), n.rank,
           n.family, n.currency
    FROM unnest(CAST(:notice_invoice_ids AS integer[]), CAST(:notice_debtor_ids AS integer[]),
                CAST(:notice_step_keys AS text[]), CAST(:notice_due_ats AS timestamptz[]),
                CAST(:notice_templates AS text[]), CAST(:notice_channels AS text[]), CAST(:notice_ranks AS integer[]),
                CAST(:notice_families AS text[]), CAST(:notice_currencies AS text[]))
         AS n(invoice_id, debtor_id, step_key, due_at, template, channels, rank, family, currency)
), groups AS (
    SELECT DISTINCT ON (c.debtor_id, c.family, c.currency) c.debtor_id, c.family, c.currency, c.template, c.channels
    FROM candidates AS c
    ORDER BY c.debtor_id, c.family, c.currency, c.rank DESC, c.invoice_id, c.step_key
), routed AS (
    SELECT g.debtor_id, g.family, g.currency, g.template, chosen.channel, chosen.conversation_id,
           CASE WHEN chosen.channel IS NOT NULL THEN nextval(CAST(:message_sequence AS regclass)) END AS message_id,
           CASE WHEN chosen.channel IS NOT NULL THEN nextval(CAST(:outbox_sequence AS regclass)) END AS outbox_id
    FROM groups AS g
    JOIN debtors AS d ON d.id = g.debtor_id
    LEFT JOIN LATERAL (
        SELECT p.channel,
               (SELECT max(v.id) FROM conversations AS v
                WHERE v.debtor_id = d.id AND v.channel = p.channel AND v.mode <> 'closed') AS conversation_id
        FROM json_array_elements_text(
                 CASE WHEN json_typeof(d.channel_preference) = 'array' AND json_array_length(d.channel_preference) > 0
                      THEN d.channel_preference ELSE CAST('["sms"]' AS json) END
             ) WITH ORDINALITY AS p(channel, position)
        WHERE p.channel = ANY(g.channels)
          AND NOT EXISTS (SELECT 1 FROM consent_opt_outs AS o WHERE o.debtor_id = d.id AND o.revoked_at IS NULL
                          AND o.channel IN (p.channel, 'all'))
          AND CASE p.channel
                  WHEN 'sms' THEN COALESCE(d.phone, '') <> ''
                  WHEN 'whatsapp' THEN COALESCE(d.phone, '') <> ''
                  WHEN 'email' THEN COALESCE(d.email, '') <> ''
                  WHEN 'telegram' THEN COALESCE(d.telegram_chat_id, '') <> ''
                  WHEN 'webchat' THEN EXISTS (SELECT 1 FROM conversations AS v WHERE v.debtor_id = d.id
                                              AND v.channel = 'webchat' AND v.mode <> 'closed')
                  ELSE false
              END
        ORDER BY p.position LIMIT 1
    ) AS chosen ON true
), claimed AS (
    INSERT INTO scheduled_reminders (invoice_id, debtor_id, step_key, due_at, status, outbox_id, reason, created_at)
    SELECT c.invoice_id, c.debtor_id, c.step_key, c.due_at,
           CASE WHEN r.channel IS NULL THEN 'skipped' ELSE 'queued' END, r.outbox_id,
           CASE WHEN r.channel IS NULL THEN 'no reachable channel' END, CAST(:now AS timestamptz)
    FROM candidates AS c
    JOIN routed AS r ON r.debtor_id = c.debtor_id AND r.family = c.family AND r.currency = c.currency
    ORDER BY c.invoice_id, c.step_key
    ON CONFLICT (invoice_id, step_key) DO NOTHING
    RETURNING status, outbox_id
), sent_groups AS (
    SELECT * FROM routed WHERE outbox_id IN (SELECT outbox_id FROM claimed)
), new_messages AS (
    INSERT INTO messages (id, conversation_id, debtor_id, direction, channel, body, media, template_key,
                          delivery_status, created_at)
    SELECT message_id, conversation_id, debtor_id, 'out', channel, '', CAST('[]' AS json), template, 'queued',
           CAST(:now AS timestamptz)
    FROM sent_groups
    RETURNING id
), new_outbox AS (
    INSERT INTO outbox (id, message_id, channel, initiated_by, status, attempts, next_attempt_at, created_at)
    SELECT outbox_id, message_id, channel, 'bot', 'pending', 0, CAST(:now AS timestamptz), CAST(:now AS timestamptz)
    FROM sent_groups
    RETURNING id
)
SELECT (SELECT count(*) FROM claimed) AS planned,
       (SELECT count(*) FROM claimed WHERE status = 'queued') AS queued,
       (SELECT count(*) FROM claimed WHERE status = 'skipped') AS skipped,
       (SELECT count(*) FROM new_messages) + 0 * (SELECT count(*) FROM new_outbox) AS messages
""")


class PgPlanner:
    """The per-run parameters of PG_PLAN_PAGE (cadences as arrays, the sequences) and one call per page."""

    def __init__(self, session: Session, cadences: Cadences, now: datetime, creditor_id: int | None) -> None:
        specs = [((None, None), DEFAULT_CADENCE), *cadences.by_key.items()]
        steps = [(spec_id, step) for spec_id, (_, spec) in enumerate(specs) for step in spec.steps]
        sequence = "SELECT pg_get_serial_sequence(:table, 'id')"
        self.session = session
        self.constants: dict[str, Any] = {
            "now": now,
            "creditor_id": creditor_id,
            "horizon": now.date() + timedelta(days=cadences.max_lead_days + 1),
            "spec_ids": list(range(1, len(specs))),
            "spec_creditors": [creditor for (creditor, _), _ in specs[1:]],
            "spec_segments": [segment for (_, segment), _ in specs[1:]],
            "step_specs": [spec_id for spec_id, _ in steps],
            "step_keys": [step.key for _, step in steps],
            "step_offsets": [step.offset_days for _, step in steps],
            "step_templates": [step.template for _, step in steps],
            "step_channels": [",".join(channel.value for channel in step.channels) for _, step in steps],
            "message_sequence": session.scalar(text(sequence), {"table": "messages"}),
            "outbox_sequence": session.scalar(text(sequence), {"table": "outbox"}),
        }

    def plan_page(self, page: tuple[int, int], notices: Sequence[Candidate], report: PlanReport) -> None:
        after, up_to = page
        row = self.session.execute(
            PG_PLAN_PAGE, {**self.constants, "after": after, "up_to": up_to, **_notice_columns(notices)}
        ).one()
        report.planned += row.planned
        report.queued += row.queued
        report.skipped += row.skipped
        report.messages += row.messages


def _notice_columns(notices: Sequence[Candidate]) -> dict[str, list[Any]]:
    return {
        "notice_invoice_ids": [c.invoice_id for c in notices],
        "notice_debtor_ids": [c.debtor_id for c in notices],
        "notice_step_keys": [c.step_key for c in notices],
        "notice_due_ats": [c.due_at for c in notices],
        "notice_templates": [c.template for c in notices],
        "notice_channels": [",".join(c.channels) for c in notices],
        "notice_ranks": [c.rank for c in notices],
        "notice_families": [c.family for c in notices],
        "notice_currencies": [c.currency for c in notices],
    }


# --- the text, written when the dispatcher sends ---------------------------------------------------------------


def reminder_text(
    session: Session, outbox_id: int, template_key: str, channel: str, debtor: Debtor, now: datetime
) -> str | None:
    """A reminder message's words as of `now`, from the reminder rows queued on `outbox_id`: the balances, the
    count and the days overdue are those at sending. None when none of its debts is owed any more (paid,
    disputed, written off since planning) -- or when the outbox row carries no reminders at all."""
    owed = _still_owed(session, outbox_id)
    if not owed:
        return None
    first_due = min(due_date for _, due_date in owed.values())
    local_today = now.astimezone(ZoneInfo(debtor.timezone)).date()
    currency = next(iter(owed.values()))[0].currency
    variables = {
        "debtor_name": debtor.name.split()[0] if debtor.name else "",
        "creditor_name": debtor.creditor.name,
        "count": len(owed),
        "amount": sum((amount for amount, _ in owed.values()), Money(0, currency)),
        "due_date": first_due,
        "days_overdue": max(0, (local_today - first_due).days),
    }
    return TemplateRenderer.from_session(session).render(template_key, debtor.locale, channel, variables)


def _still_owed(session: Session, outbox_id: int) -> dict[object, tuple[Money, date]]:
    """What the message's reminders are about and is still owed: each open debt once (two of its steps may
    share a message), each unpaid installment of the plan."""
    rows = session.execute(
        select(ScheduledReminder.step_key, Invoice.id, Invoice.status, Invoice.balance_minor, Invoice.currency,
               Invoice.due_date)
        .join(Invoice, Invoice.id == ScheduledReminder.invoice_id)
        .where(ScheduledReminder.outbox_id == outbox_id)
    ).all()  # fmt: skip
    owed: dict[object, tuple[Money, date]] = {}
    installment_ids = [int(key.split(":")[1]) for key, *_ in rows if key.startswith("inst:")]
    for key, invoice_id, status, balance, currency, due_date in rows:
        if not key.startswith("inst:") and status == "open" and balance > 0:
            owed[invoice_id] = (Money(balance, currency), due_date)
    if installment_ids:
        for installment, currency in session.execute(
            select(Installment, PaymentPlan.currency)
            .join(PaymentPlan, PaymentPlan.id == Installment.plan_id)
            .where(Installment.id.in_(installment_ids), Installment.paid_minor < Installment.amount_minor)
        ).tuples():
            owed[f"inst:{installment.id}"] = (_remaining(installment, currency), installment.due_date)
    return owed


def queued_reminder_preview(session: Session, message: Message, debtor: Debtor, now: datetime) -> str:
    """What a queued reminder would say if it went out at `now` (the console timeline shows this until the
    dispatcher writes the real words); "" for a message that is not an unsent reminder."""
    if message.body or not message.template_key or message.direction != "out":
        return message.body
    outbox_id = session.scalar(select(Outbox.id).where(Outbox.message_id == message.id))
    if outbox_id is None:
        return ""
    return reminder_text(session, outbox_id, message.template_key, message.channel, debtor, now) or ""
