"""Reminder campaigns: cadences of steps at day offsets from the due date, and planning them in bulk.

`plan_reminders()` walks the debtors in keyset pages; per page it finds the cadence step each open debt is due
for, claims it with INSERT ... ON CONFLICT DO NOTHING on UNIQUE(invoice_id, step_key) (so racing schedulers plan
a step once), and queues ONE message per debtor and run covering all of that debtor's newly due debts, with a
fixed number of multi-row statements per page. The compliance gate decides at dispatch time.
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
from bot.domain import ChannelName, Money
from bot.models import (
    Cadence,
    Case,
    ConsentOptOut,
    Conversation,
    Creditor,
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
    amount: Money
    due_date: date


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
    session: Session, now: datetime, *, batch_size: int = 1000, creditor_id: int | None = None
) -> PlanReport:
    """Plan and queue every reminder due by `now`; safe to run again and from two schedulers at once.

    `creditor_id` limits the run to one creditor's debtors (a Celery worker's share of the fan-out).
    Debts are read a page of debtors at a time (keyset on debtor id), so memory stays flat however large the
    portfolio; each page is claimed, rendered and queued with a handful of multi-row statements.
    """
    report = PlanReport()
    renderer = TemplateRenderer.from_session(session)
    # Installment notices are few; they join their debtor's page so a debtor still gets one message per run.
    notices = mark_missed_installments(session, now, report, creditor_id)
    notices += installment_candidates(session, now, creditor_id)
    extra: dict[int, list[Candidate]] = defaultdict(list)
    for candidate in notices:
        extra[candidate.debtor_id].append(candidate)
    cadences = Cadences.load(session)
    moments = StepMoments()
    for after, up_to in debtor_pages(session, batch_size, creditor_id):
        batch = cadence_candidates(session, now, cadences, (after, up_to), moments, creditor_id)
        batch += [c for debtor_id in list(extra) if after < debtor_id <= up_to for c in extra.pop(debtor_id)]
        batch.sort(key=lambda c: (c.debtor_id, c.invoice_id, c.step_key))
        claimed = claim(session, batch, now)
        report.planned += len(claimed)
        queue_messages(session, claimed, renderer, now, report)
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
            Invoice.id, Invoice.debtor_id, Invoice.creditor_id, Invoice.due_date, Invoice.balance_minor,
            Invoice.currency, Debtor.timezone, Debtor.segment, last_due_at,
        )
        .join(Debtor, Debtor.id == Invoice.debtor_id)
        .where(
            Invoice.debtor_id > after,
            Invoice.debtor_id <= up_to,
            Invoice.status == "open",
            Invoice.balance_minor > 0,
            Invoice.due_date <= horizon,
            ~in_active_plan,
            ~_excluded_debtor(Invoice.debtor_id),
            *([Invoice.creditor_id == creditor_id] if creditor_id is not None else []),
        )
    )  # fmt: skip
    found = []
    for invoice_id, debtor_id, creditor_id, due_date, balance, currency, zone_name, segment, last_at in rows:
        due = moments.latest_due(cadences.for_debtor(creditor_id, segment), zone_name, due_date, now)
        if due is None or (last_at is not None and _aware(last_at) >= due[1]):
            continue
        step, at = due
        found.append(
            Candidate(invoice_id, debtor_id, step.key, at, step.template, tuple(c.value for c in step.channels),
                      step.offset_days, "debt", Money(balance, currency), due_date)
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
                  ALL_CHANNELS, 0, "installment", _remaining(installment, plan.currency), installment.due_date)
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
                      ALL_CHANNELS, MISSED_RANK, "debt", Money(inv.balance_minor, inv.currency), inv.due_date)
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
        .where(payment_plan_invoices.c.plan_id.in_(plan_ids), Invoice.status == "open", Invoice.balance_minor > 0)
    )
    return [(plan_id, invoice) for plan_id, invoice in rows]


# --- claim and queue ---------------------------------------------------------------------------------------


def claim(session: Session, batch: Sequence[Candidate], now: datetime) -> list[tuple[int, Candidate]]:
    """Insert the batch's reminder rows; only the rows this call inserted come back (the others were planned)."""
    if not batch:
        return []
    dialect = session.get_bind().dialect.name
    by_key = {(c.invoice_id, c.step_key): c for c in batch}
    if dialect == "postgresql":
        rows = session.execute(PG_CLAIM, _columns(batch, now))
        return [(row_id, by_key[(invoice_id, step_key)]) for row_id, invoice_id, step_key in rows]
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


# On PostgreSQL a batch travels as one array per column: one short statement that the server plans once,
# instead of a multi-row VALUES list with thousands of parameters for the driver to build and parse.
PG_CLAIM = text(
    "INSERT INTO scheduled_reminders (invoice_id, debtor_id, step_key, due_at, status, created_at) "
    "SELECT b.invoice_id, b.debtor_id, b.step_key, b.due_at, 'planned', :now "
    "FROM unnest(CAST(:invoice_ids AS integer[]), CAST(:debtor_ids AS integer[]), CAST(:step_keys AS text[]), "
    "CAST(:due_ats AS timestamptz[])) AS b(invoice_id, debtor_id, step_key, due_at) "
    "ON CONFLICT (invoice_id, step_key) DO NOTHING RETURNING id, invoice_id, step_key"
)
PG_MESSAGES = text(
    "INSERT INTO messages (conversation_id, debtor_id, direction, channel, body, media, template_key, "
    "delivery_status, created_at) "
    "SELECT m.conversation_id, m.debtor_id, 'out', m.channel, m.body, CAST('[]' AS json), m.template_key, "
    "'queued', :now "
    "FROM unnest(CAST(:conversation_ids AS integer[]), CAST(:debtor_ids AS integer[]), CAST(:channels AS text[]), "
    "CAST(:bodies AS text[]), CAST(:template_keys AS text[])) WITH ORDINALITY "
    "AS m(conversation_id, debtor_id, channel, body, template_key, position) "
    "ORDER BY m.position RETURNING id"
)
PG_OUTBOX = text(
    "INSERT INTO outbox (message_id, channel, initiated_by, status, attempts, next_attempt_at, created_at) "
    "SELECT m.id, m.channel, 'bot', 'pending', 0, :now, :now FROM messages AS m "
    "WHERE m.id = ANY(CAST(:message_ids AS integer[])) RETURNING id, message_id"
)
PG_MARK = text(
    "UPDATE scheduled_reminders AS r SET status = u.status, outbox_id = u.outbox_id, reason = u.reason "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:statuses AS text[]), CAST(:outbox_ids AS integer[]), "
    "CAST(:reasons AS text[])) AS u(id, status, outbox_id, reason) WHERE r.id = u.id"
)


def _columns(batch: Sequence[Candidate], now: datetime) -> dict[str, Any]:
    return {
        "now": now,
        "invoice_ids": [c.invoice_id for c in batch],
        "debtor_ids": [c.debtor_id for c in batch],
        "step_keys": [c.step_key for c in batch],
        "due_ats": [c.due_at for c in batch],
    }


@dataclass(frozen=True, slots=True)
class Recipient:
    debtor: Any  # a row with the Debtor columns a reminder needs (id, name, locale, timezone, addresses, ...)
    creditor_name: str
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
        select(
            Debtor.id, Debtor.name, Debtor.locale, Debtor.timezone, Debtor.channel_preference, Debtor.phone,
            Debtor.email, Debtor.telegram_chat_id, Creditor.name.label("creditor_name"),
        )
        .join(Creditor, Creditor.id == Debtor.creditor_id)
        .where(Debtor.id.in_(ids))
    )  # fmt: skip
    return {row.id: Recipient(row, row.creditor_name, frozenset(opted[row.id]), conversations[row.id]) for row in rows}


def choose_channel(recipient: Recipient, allowed: Sequence[str]) -> str | None:
    """The debtor's first preferred channel the step allows, with an address and no opt-out.

    Web chat has no address to send to: it is reachable while the debtor has an open portal chat, where the
    reminder appears in the conversation.
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
    session: Session, claimed: Sequence[tuple[int, Candidate]], renderer: TemplateRenderer, now: datetime,
    report: PlanReport,
) -> None:  # fmt: skip
    """One message per (debtor, family, currency) for the claimed reminders; mark them queued or skipped."""
    if not claimed:
        return
    groups: dict[tuple[int, str, str], list[tuple[int, Candidate]]] = defaultdict(list)
    for row_id, candidate in claimed:
        groups[(candidate.debtor_id, candidate.family, candidate.amount.currency)].append((row_id, candidate))
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
        body = renderer.render(lead.template, recipient.debtor.locale, channel, _variables(recipient, members, now))
        messages.append(
            {"conversation_id": recipient.conversations.get(channel), "debtor_id": debtor_id, "direction": "out",
             "channel": channel, "body": body, "template_key": lead.template, "delivery_status": "queued",
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
    if updates and session.get_bind().dialect.name == "postgresql":
        session.execute(
            PG_MARK,
            {"ids": [u["row_id"] for u in updates], "statuses": [u["new_status"] for u in updates],
             "outbox_ids": [u["new_outbox_id"] for u in updates], "reasons": [u["why"] for u in updates]},
        )  # fmt: skip
    elif updates:
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
    if session.get_bind().dialect.name == "postgresql":
        return _insert_messages_and_outbox_pg(session, messages, now)
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
    if not outbox:
        return []
    statement = insert(outbox_table).returning(outbox_table.c.id, outbox_table.c.message_id)
    outbox_of = {message_id: outbox_id for outbox_id, message_id in session.execute(statement, outbox)}
    return [outbox_of[message_id] for message_id in message_ids]  # type: ignore[index]


def _insert_messages_and_outbox_pg(session: Session, messages: list[dict[str, Any]], now: datetime) -> list[int]:
    # INSERT ... SELECT ... ORDER BY assigns serial ids in that order, so the ids come back in message order.
    columns = {
        "now": now,
        "conversation_ids": [m["conversation_id"] for m in messages],
        "debtor_ids": [m["debtor_id"] for m in messages],
        "channels": [m["channel"] for m in messages],
        "bodies": [m["body"] for m in messages],
        "template_keys": [m["template_key"] for m in messages],
    }
    message_ids = sorted(session.execute(PG_MESSAGES, columns).scalars())
    outbox_of = {message_id: outbox_id for outbox_id, message_id in session.execute(
        PG_OUTBOX, {"now": now, "message_ids": message_ids})}  # fmt: skip
    return [outbox_of[message_id] for message_id in message_ids]


def _row(row_id: int, status: str, outbox_id: int | None, reason: str | None) -> dict[str, Any]:
    return {"row_id": row_id, "new_status": status, "new_outbox_id": outbox_id, "why": reason}


def _variables(recipient: Recipient, members: Sequence[tuple[int, Candidate]], now: datetime) -> dict[str, Any]:
    # A debt counts once even if two of its steps are claimed together; installments count each.
    debts = {c.step_key if c.family == "installment" else c.invoice_id: c for _, c in members}
    first_due = min(candidate.due_date for candidate in debts.values())
    local_today = now.astimezone(ZoneInfo(recipient.debtor.timezone)).date()
    total = sum((c.amount for c in debts.values()), Money(0, next(iter(debts.values())).amount.currency))
    return {
        "debtor_name": recipient.debtor.name.split()[0] if recipient.debtor.name else "",
        "creditor_name": recipient.creditor_name,
        "count": len(debts),
        "amount": total,
        "due_date": first_due,
        "days_overdue": max(0, (local_today - first_due).days),
    }
