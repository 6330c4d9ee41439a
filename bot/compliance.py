"""The one compliance gate: may we contact this debtor on this channel now? If not, why, and from when?

`ContactPolicy.decide(context, now)` is pure logic over plain values (`ContactContext`) and answers with a
`Decision`: allow, defer until an aware UTC moment, or block, each with a stable reason code to store.
`load_context()` builds the context from the database in a constant number of queries. Nothing here sends.
Times of day, holidays and calendar days are the debtor's, in their IANA zone (see docs/compliance.md).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import holidays
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session

from bot.models import Case, ConsentOptOut, Conversation, Creditor, Debtor, Invoice, Message, Outbox, ScheduledReminder

Verdict = Literal["allow", "defer", "block"]
INITIATORS = ("bot", "reply", "agent")
OPT_OUT_CONFIRMATIONS = frozenset({"opted_out", "opted_out_all"})
WHATSAPP_WINDOW = timedelta(hours=24)
REG_F_LIMIT, REG_F_DAYS = 7, 7
HORIZON_DAYS = 400  # how far ahead to look for an allowed minute before calling the rules unsatisfiable
CLOSED_CASE_STATUSES = ("resolved", "closed", "cancelled")


class Reason(enum.StrEnum):
    OK = "ok"
    DISCLOSURE_REQUIRED = "disclosure_required"
    OPTED_OUT_ALL = "opted_out_all"
    OPTED_OUT_CHANNEL = "opted_out_channel"
    DISPUTE_OPEN = "dispute_open"
    NO_ALLOWED_TIME = "no_allowed_time"
    WHATSAPP_WINDOW_CLOSED = "whatsapp_window_closed_no_template"
    COLLECTION_PAUSED = "collection_paused"
    REG_F = "reg_f_7_in_7"
    WEEKLY_CAP = "weekly_cap"
    DAILY_CAP = "daily_cap"
    MIN_DAYS_BETWEEN = "min_days_between"
    CHANNEL_WEEKLY_CAP = "channel_weekly_cap"
    CHANNEL_DAILY_CAP = "channel_daily_cap"
    HOLIDAY = "holiday"
    NO_CONTACT_DAY = "no_contact_day"
    QUIET_HOURS = "quiet_hours"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: Reason
    until: datetime | None = None  # for "defer": the earliest moment the message becomes allowed (aware UTC)
    detail: str = ""
    requires_disclosure: bool = False  # allow, but prepend `disclosure_template` (first bot contact)
    disclosure_template: str | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"

    def as_stored(self) -> str:
        """What goes into Outbox.decision_reason: "defer:quiet_hours until 2026-11-26T11:00Z"."""
        until = f" until {self.until.astimezone(UTC):%Y-%m-%dT%H:%MZ}" if self.until else ""
        return f"{self.verdict}:{self.reason}{until}"[:200]


# --- rules ------------------------------------------------------------------------------------------------

ClockTime = Annotated[str, Field(pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")]
Cap = Annotated[int, Field(ge=1, le=100)]
Weekday = Annotated[int, Field(ge=0, le=6)]  # Python's date.weekday(): 0 = Monday ... 6 = Sunday


class AllowedHours(BaseModel):
    """Contact is allowed from `start` (inclusive) to `end` (exclusive), local wall-clock time; "24:00" = midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: ClockTime = "08:00"
    end: ClockTime = "20:00"

    @model_validator(mode="after")
    def _start_before_end(self) -> AllowedHours:
        if self.start >= self.end:
            raise ValueError(f"allowed_hours start {self.start} must be before end {self.end}")
        return self

    def contains(self, moment: time) -> bool:
        # "HH:MM" strings compare like times, and "24:00" sorts after every real time.
        return self.start <= f"{moment:%H:%M}" < self.end


class ChannelCaps(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    daily: Cap | None = None
    weekly: Cap | None = None


class RuleSet(BaseModel):
    """The contact rules for one debtor: the base, then the country's defaults, then the creditor's JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_hours: AllowedHours = AllowedHours()
    no_contact_on_holidays: bool = True
    no_contact_weekdays: frozenset[Weekday] = frozenset()
    daily_cap: Cap | None = 1
    weekly_cap: Cap | None = 3
    min_days_between: int = Field(default=0, ge=0, le=7)
    channel_caps: dict[str, ChannelCaps] = Field(default_factory=dict)
    reg_f: bool = False
    first_contact_disclosure: str | None = Field(default=None, min_length=1, max_length=100)

    def tightened_by(self, floor: RuleSet) -> RuleSet:
        """These rules, never looser than `floor` (a country's statutory limits). May leave no allowed hours."""
        hours = AllowedHours.model_construct(
            start=max(self.allowed_hours.start, floor.allowed_hours.start),
            end=min(self.allowed_hours.end, floor.allowed_hours.end),
        )
        return self.model_copy(
            update={
                "allowed_hours": hours,
                "no_contact_on_holidays": self.no_contact_on_holidays or floor.no_contact_on_holidays,
                "no_contact_weekdays": self.no_contact_weekdays | floor.no_contact_weekdays,
                "daily_cap": _lower(self.daily_cap, floor.daily_cap),
                "weekly_cap": _lower(self.weekly_cap, floor.weekly_cap),
                "min_days_between": max(self.min_days_between, floor.min_days_between),
                "reg_f": self.reg_f or floor.reg_f,
                "first_contact_disclosure": self.first_contact_disclosure or floor.first_contact_disclosure,
            }
        )


def _lower(a: int | None, b: int | None) -> int | None:
    """The stricter of two caps, where None means no cap."""
    return b if a is None else a if b is None else min(a, b)


def _floor(**limits: Any) -> RuleSet:
    """A statutory floor: permissive everywhere except the limits given."""
    permissive = {"allowed_hours": AllowedHours(start="00:00", end="24:00"), "no_contact_on_holidays": False}
    return RuleSet.model_validate(permissive | {"daily_cap": None, "weekly_cap": None} | limits)


# Where we start per country (a creditor may loosen these down to the floor) ...
COUNTRY_DEFAULTS: dict[str, dict[str, Any]] = {
    "US": {"allowed_hours": {"start": "08:00", "end": "21:00"}, "no_contact_on_holidays": False, "reg_f": True},
    "MX": {"allowed_hours": {"start": "07:00", "end": "22:00"}},
    "CL": {
        "allowed_hours": {"start": "08:00", "end": "20:00"},
        "no_contact_weekdays": [6],
        "weekly_cap": 2,
        "min_days_between": 2,
    },
}
# ... and what the law sets, which no creditor override can loosen.
STATUTORY_FLOORS: dict[str, RuleSet] = {
    "US": _floor(allowed_hours={"start": "08:00", "end": "21:00"}),
    "MX": _floor(allowed_hours={"start": "07:00", "end": "22:00"}),
    "CL": _floor(
        allowed_hours={"start": "08:00", "end": "20:00"},
        no_contact_on_holidays=True,
        no_contact_weekdays=[6],
        weekly_cap=2,
        min_days_between=2,
    ),
}

RulesFor = Callable[[str | None, Mapping[str, Any]], RuleSet]


@dataclass(frozen=True)
class RuleBook:
    """Resolves the rules for a debtor's country and a creditor's `compliance_rules` JSON."""

    base: RuleSet = field(default_factory=RuleSet)
    country_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: COUNTRY_DEFAULTS)
    floors: Mapping[str, RuleSet] = field(default_factory=lambda: STATUTORY_FLOORS)

    def __call__(self, country: str | None, overrides: Mapping[str, Any]) -> RuleSet:
        """Raises pydantic.ValidationError for a malformed override; the console validates before saving."""
        code = (country or "").upper()
        merged = self.base.model_dump() | dict(self.country_defaults.get(code, {})) | dict(overrides)
        rules = RuleSet.model_validate(merged)
        floor = self.floors.get(code)
        return rules.tightened_by(floor) if floor else rules


# --- the context ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriorContact:
    """A bot-initiated message already sent to the debtor."""

    at: datetime
    channel: str
    invoice_id: int | None = None  # None: about the debtor's debts in general (counts for every debt)


@dataclass(frozen=True)
class ContactContext:
    """Everything the gate needs, as plain values; `load_context` builds it from the database."""

    timezone: str
    country: str | None
    channel: str
    initiated_by: str
    template_key: str | None = None
    invoice_id: int | None = None
    creditor_rules: Mapping[str, Any] = field(default_factory=dict)
    opted_out: frozenset[str] = frozenset()  # active opt-out channels, "all" included
    dispute_open: bool = False
    paused_until: datetime | None = None
    prior_contacts: tuple[PriorContact, ...] = ()  # recent bot-initiated messages sent, any channel or debt
    has_prior_contact: bool = False  # any bot-initiated message ever sent to this debtor
    whatsapp_last_inbound_at: datetime | None = None
    whatsapp_template_available: bool = False
    debtor_id: int | None = None  # for the audit trail only

    def __post_init__(self) -> None:
        if self.initiated_by not in INITIATORS:
            raise ValueError(f"initiated_by must be one of {INITIATORS}, not {self.initiated_by!r}")
        ZoneInfo(self.timezone)  # an unknown zone fails here, not half-way through a decision


# --- the calendar: allowed minutes in the debtor's zone ---------------------------------------------------


@functools.lru_cache(maxsize=512)
def holiday_dates(country: str | None, year: int) -> frozenset[date]:
    """National public holidays of `country` in `year`; none for a country the `holidays` package lacks."""
    if not country:
        return frozenset()
    try:
        return frozenset(holidays.country_holidays(country.upper(), years=year))
    except NotImplementedError:
        return frozenset()


def day_block(rules: RuleSet, country: str | None, day: date) -> Reason | None:
    if rules.no_contact_on_holidays and day in holiday_dates(country, day.year):
        return Reason.HOLIDAY
    if day.weekday() in rules.no_contact_weekdays:
        return Reason.NO_CONTACT_DAY
    return None


def time_block(rules: RuleSet, country: str | None, zone: ZoneInfo, moment: datetime) -> Reason | None:
    """Why `moment` is outside the allowed days and hours in `zone`, or None when it is inside."""
    local = moment.astimezone(zone)
    blocked = day_block(rules, country, local.date())
    if blocked is not None:
        return blocked
    return None if rules.allowed_hours.contains(local.time()) else Reason.QUIET_HOURS


def local_instant(day: date, clock: str, zone: ZoneInfo) -> datetime:
    """The first UTC instant whose wall-clock time in `zone` is at or after `clock` on `day`.

    An ambiguous time (clocks going back) gives its first occurrence; a time skipped by clocks going
    forward gives the moment of the jump, the first instant at or after it on the wall.
    """
    wall = (
        datetime.combine(day + timedelta(days=1), time())
        if clock == "24:00"
        else datetime.combine(day, time.fromisoformat(clock))
    )
    tries = [wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    real = [t for t in tries if t.astimezone(zone).replace(tzinfo=None) == wall]
    if real:
        return min(real)
    # In a gap, fold=1 lands before the jump (wall < target) and fold=0 after it: bisect on whole seconds.
    low, high = (int(t.timestamp()) for t in sorted(tries))
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def next_allowed(rules: RuleSet, country: str | None, zone: ZoneInfo, earliest: datetime) -> datetime | None:
    """The first allowed moment at or after `earliest` (aware UTC), or None if the rules allow none."""
    first_day = earliest.astimezone(zone).date()
    for offset in range(HORIZON_DAYS):
        day = first_day + timedelta(days=offset)
        if day_block(rules, country, day) is not None:
            continue
        start = local_instant(day, rules.allowed_hours.start, zone)
        end = local_instant(day, rules.allowed_hours.end, zone)
        candidate = max(earliest, start)
        if candidate < end and time_block(rules, country, zone, candidate) is None:
            return candidate
    return None


# --- caps: counted in the debtor's local calendar days -----------------------------------------------------


def _clear_day(days: Iterable[date], today: date, window: int, limit: int | None) -> date | None:
    """None if fewer than `limit` contacts fall in the `window` local days ending today; else the first day
    on which they do (the limit-th most recent contact has left the window)."""
    if limit is None:
        return None
    recent = sorted((day for day in days if day > today - timedelta(days=window)), reverse=True)
    return recent[limit - 1] + timedelta(days=window) if len(recent) >= limit else None


def cap_blocks(rules: RuleSet, ctx: ContactContext, zone: ZoneInfo, today: date) -> list[tuple[Reason, date]]:
    """Each cap that the next message would break today, with the first local day it no longer would."""
    days = [contact.at.astimezone(zone).date() for contact in ctx.prior_contacts]
    on_channel = [d for d, c in zip(days, ctx.prior_contacts, strict=True) if c.channel == ctx.channel]
    same_debt = [
        d
        for d, c in zip(days, ctx.prior_contacts, strict=True)
        if ctx.invoice_id is None or c.invoice_id is None or c.invoice_id == ctx.invoice_id
    ]
    channel_caps = rules.channel_caps.get(ctx.channel, ChannelCaps())
    last = max(days, default=None)
    checks: list[tuple[Reason, date | None]] = [
        (Reason.REG_F, _clear_day(same_debt, today, REG_F_DAYS, REG_F_LIMIT if rules.reg_f else None)),
        (Reason.WEEKLY_CAP, _clear_day(days, today, 7, rules.weekly_cap)),
        (Reason.DAILY_CAP, _clear_day(days, today, 1, rules.daily_cap)),
        (Reason.MIN_DAYS_BETWEEN, _gap_day(last, today, rules.min_days_between)),
        (Reason.CHANNEL_WEEKLY_CAP, _clear_day(on_channel, today, 7, channel_caps.weekly)),
        (Reason.CHANNEL_DAILY_CAP, _clear_day(on_channel, today, 1, channel_caps.daily)),
    ]
    return [(reason, day) for reason, day in checks if day is not None]


def _gap_day(last: date | None, today: date, min_days: int) -> date | None:
    """The first day at least `min_days` after the last contact, if that is still to come."""
    if last is None or min_days == 0:
        return None
    day = last + timedelta(days=min_days)
    return day if day > today else None


# --- the policy -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContactPolicy:
    """Every outbound message passes `decide`; bot-initiated ones get the full rule set, answers only consent."""

    rules_for: RulesFor = field(default_factory=RuleBook)

    def rules(self, ctx: ContactContext) -> RuleSet:
        return self.rules_for(ctx.country, ctx.creditor_rules)

    def decide(self, ctx: ContactContext, now: datetime) -> Decision:
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        refused = _consent(ctx)
        if refused is not None:
            return refused
        if ctx.initiated_by != "bot":
            # Answers to the debtor (and an agent's words) are not contact attempts: no hours, no caps.
            return Decision("allow", Reason.OK, detail=f"{ctx.initiated_by}: only consent applies")
        if ctx.dispute_open:
            return Decision("block", Reason.DISPUTE_OPEN, detail="a dispute is open: collection contact ceases")
        return self._schedule(ctx, self.rules(ctx), now)

    def _schedule(self, ctx: ContactContext, rules: RuleSet, now: datetime) -> Decision:
        zone = ZoneInfo(ctx.timezone)
        bounds = _lower_bounds(ctx, rules, zone, now)
        send_at = next_allowed(rules, ctx.country, zone, max([now, *(moment for _, moment in bounds)]))
        if send_at is None:
            detail = f"no allowed minute in the next {HORIZON_DAYS} days under these rules"
            return Decision("block", Reason.NO_ALLOWED_TIME, detail=detail)
        if not _whatsapp_open(ctx, send_at):
            detail = "WhatsApp 24-hour window closed" + (" by then" if send_at > now else "")
            return Decision("block", Reason.WHATSAPP_WINDOW_CLOSED, detail=f"{detail} and no approved template")
        if send_at > now:
            return _defer(ctx, rules, zone, now, send_at, [reason for reason, _ in bounds])
        if rules.first_contact_disclosure and not ctx.has_prior_contact:
            key = rules.first_contact_disclosure
            detail = f"first contact: prepend {key}"
            return Decision(
                "allow", Reason.DISCLOSURE_REQUIRED, detail=detail, requires_disclosure=True, disclosure_template=key
            )
        return Decision("allow", Reason.OK, detail="within hours, caps and consent")


def _consent(ctx: ContactContext) -> Decision | None:
    """Opt-outs bind every message, except the confirmation of the opt-out itself."""
    if ctx.template_key in OPT_OUT_CONFIRMATIONS:
        return None
    if "all" in ctx.opted_out:
        return Decision("block", Reason.OPTED_OUT_ALL, detail="the debtor opted out of all contact")
    if ctx.channel in ctx.opted_out:
        return Decision("block", Reason.OPTED_OUT_CHANNEL, detail=f"the debtor opted out of {ctx.channel}")
    return None


def _lower_bounds(ctx: ContactContext, rules: RuleSet, zone: ZoneInfo, now: datetime) -> list[tuple[Reason, datetime]]:
    """The date-based rules failing now, each with the moment it stops applying (in priority order)."""
    bounds: list[tuple[Reason, datetime]] = []
    if ctx.paused_until is not None and ctx.paused_until > now:
        bounds.append((Reason.COLLECTION_PAUSED, ctx.paused_until.astimezone(UTC)))
    today = now.astimezone(zone).date()
    bounds += [(reason, local_instant(day, "00:00", zone)) for reason, day in cap_blocks(rules, ctx, zone, today)]
    return bounds


def _whatsapp_open(ctx: ContactContext, at: datetime) -> bool:
    if ctx.channel != "whatsapp" or ctx.whatsapp_template_available:
        return True
    last = ctx.whatsapp_last_inbound_at
    return last is not None and at - last < WHATSAPP_WINDOW


def _defer(
    ctx: ContactContext, rules: RuleSet, zone: ZoneInfo, now: datetime, until: datetime, reasons: list[Reason]
) -> Decision:
    timing = time_block(rules, ctx.country, zone, now)
    reasons = ([*reasons, timing] if timing else reasons) or [Reason.QUIET_HOURS]
    local = until.astimezone(zone)
    detail = f"{', '.join(reasons)}; next allowed {local:%Y-%m-%d %H:%M} {ctx.timezone}"
    return Decision("defer", reasons[0], until=until.astimezone(UTC), detail=detail)


# --- loading the context from the database ----------------------------------------------------------------

# Seven local calendar days reach back at most 7 days plus the zone's offset from UTC (under 15 h).
LOOKBACK = timedelta(days=9)


@dataclass(frozen=True, slots=True)
class Attempt:
    """A message about to be queued or sent, before it has an outbox row."""

    debtor_id: int
    channel: str
    initiated_by: str = "bot"
    template_key: str | None = None
    invoice_id: int | None = None


def load_context(
    session: Session, attempt: Attempt | Outbox, now: datetime, *, whatsapp_template_available: bool = False
) -> ContactContext:
    """Build the context in a fixed number of queries, however many messages the debtor has."""
    if isinstance(attempt, Outbox):
        attempt = _attempt_of(session, attempt)
    debtor, creditor = session.execute(
        select(Debtor, Creditor).join(Creditor, Creditor.id == Debtor.creditor_id).where(Debtor.id == attempt.debtor_id)
    ).one()
    sent = _sent_bot_messages(debtor.id)
    recent = session.execute(
        select(Outbox.next_attempt_at, Outbox.channel, ScheduledReminder.invoice_id)
        .select_from(Outbox)
        .join(Message, Message.id == Outbox.message_id)
        .outerjoin(ScheduledReminder, ScheduledReminder.outbox_id == Outbox.id)
        .where(*sent, Outbox.next_attempt_at >= now - LOOKBACK)
        .order_by(Outbox.next_attempt_at)
    ).all()
    return ContactContext(
        timezone=debtor.timezone,
        country=debtor.country or creditor.country,
        channel=attempt.channel,
        initiated_by=attempt.initiated_by,
        template_key=attempt.template_key,
        invoice_id=attempt.invoice_id,
        creditor_rules=dict(creditor.compliance_rules or {}),
        opted_out=_active_opt_outs(session, debtor.id),
        dispute_open=_dispute_open(session, debtor.id),
        paused_until=debtor.collection_paused_until,
        prior_contacts=tuple(PriorContact(at, channel, invoice_id) for at, channel, invoice_id in recent),
        has_prior_contact=bool(session.scalar(select(exists().where(*sent)))),
        whatsapp_last_inbound_at=_whatsapp_last_inbound(session, debtor.id) if attempt.channel == "whatsapp" else None,
        whatsapp_template_available=whatsapp_template_available,
        debtor_id=debtor.id,
    )


def _attempt_of(session: Session, row: Outbox) -> Attempt:
    message = session.get_one(Message, row.message_id)
    invoice_id = session.scalar(select(ScheduledReminder.invoice_id).where(ScheduledReminder.outbox_id == row.id))
    return Attempt(message.debtor_id, row.channel, row.initiated_by, message.template_key, invoice_id)


def _sent_bot_messages(debtor_id: int) -> tuple[Any, ...]:
    # An outbox row's next_attempt_at is when its last (successful) attempt fell due: the send time to
    # within dispatch latency, and unlike Message.status_updated_at it does not move with delivery receipts.
    # A row another worker has cleared and is sending right now (leased, attempt counted) is a contact too:
    # counting it keeps two dispatchers from both passing the same debtor's cap at the same moment.
    in_flight = (Outbox.status == "leased") & (Outbox.attempts > 0)
    return (
        Outbox.message_id == Message.id,
        Message.debtor_id == debtor_id,
        Outbox.initiated_by == "bot",
        (Outbox.status == "sent") | in_flight,
    )


def _active_opt_outs(session: Session, debtor_id: int) -> frozenset[str]:
    rows = session.scalars(
        select(ConsentOptOut.channel).where(ConsentOptOut.debtor_id == debtor_id, ConsentOptOut.revoked_at.is_(None))
    )
    return frozenset(rows)


def _dispute_open(session: Session, debtor_id: int) -> bool:
    open_case = exists().where(
        Case.debtor_id == debtor_id, Case.kind == "dispute", Case.status.not_in(CLOSED_CASE_STATUSES)
    )
    disputed_invoice = exists().where(Invoice.debtor_id == debtor_id, Invoice.status == "disputed")
    return bool(session.scalar(select(or_(open_case, disputed_invoice))))


def _whatsapp_last_inbound(session: Session, debtor_id: int) -> datetime | None:
    return session.scalar(
        select(func.max(Conversation.last_inbound_at)).where(
            Conversation.debtor_id == debtor_id, Conversation.channel == "whatsapp"
        )
    )
