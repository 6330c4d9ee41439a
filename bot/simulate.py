"""A dry run of the reminder cadences: a year of simulated time against a scratch database, before publishing.

`simulate()` migrates a throw-away SQLite database in a temp dir, creates one synthetic creditor and N debtors
(amounts, zones and channels drawn from `random.Random(seed)`), then moves a simulated clock forward one step
at a time and runs the real work at each step: risk scoring, `plan_reminders`, promise maintenance and the real
`Dispatcher` (so the compliance gate really defers and blocks) with channels that only record what they send.
Each debtor reacts to what they receive with seeded probabilities (pay, pay part, promise, ignore, opt out,
dispute), through the same models and `record_payment` the engine uses. The figures come from what was sent.
See docs/simulate.md.
"""

from __future__ import annotations

import heapq
import math
import random
import tempfile
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from bot.campaigns import REMINDER_HOUR, plan_reminders
from bot.compliance import RuleBook, RuleSet, time_block
from bot.debtors import open_invoices
from bot.dispatch import Dispatcher
from bot.domain import ChannelCapabilities, Money, OutboundMessage, SendResult
from bot.migrate import upgrade
from bot.models import Case, ConsentOptOut, Creditor, Debtor, Invoice, Message, Outbox, Payment, PromiseToPay
from bot.payments.allocation import ReceivedPayment, record_payment
from bot.ports import ChannelRegistry
from bot.promises import remind_promises, resolve_promises
from bot.risk import score_debtors
from bot.store import Database

ACTOR = "simulation"
CHECKPOINTS = (30, 60, 90, 180, 365)
DUE_WINDOW_DAYS = 60  # invoices fall due over the first 60 simulated days
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
CHANNELS = ("sms", "email", "whatsapp", "telegram")

# Per country: the debtors' time zones (most live in the first), currency, locale and a typical amount (major).
COUNTRIES: dict[str, tuple[tuple[str, ...], str, str, int]] = {
    "CL": (("America/Santiago", "America/Punta_Arenas", "Pacific/Easter"), "CLP", "es-CL", 60_000),
    "MX": (("America/Mexico_City", "America/Tijuana", "America/Cancun", "America/Hermosillo"), "MXN", "es-MX", 2_500),
    "US": (("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"), "USD", "en-US", 250),
}
FALLBACK_COUNTRY = ("UTC",), "USD", "en", 250


@dataclass(frozen=True)
class Behaviour:
    """What a debtor does after a reminder they receive, with these probabilities (the rest ignore it)."""

    pay_full: float = 0.12
    pay_partial: float = 0.05
    promise: float = 0.08
    opt_out: float = 0.01
    dispute: float = 0.01
    promise_kept: float = 0.6  # of promises made
    never_pays: float = 0.2  # share of debtors who ignore everything whatever they receive
    max_reaction_hours: int = 72  # a reaction comes between 1 hour and this long after the message

    def __post_init__(self) -> None:
        shares = (self.pay_full, self.pay_partial, self.promise, self.opt_out, self.dispute)
        if any(p < 0 for p in shares) or sum(shares) > 1:
            raise ValueError("reaction probabilities must be non-negative and sum to at most 1")


@dataclass(frozen=True)
class SimulationConfig:
    days: int = 365
    debtors: int = 200
    seed: int = 0
    creditor_country: str = "CL"
    start: datetime = DEFAULT_START
    step: timedelta = timedelta(hours=1)
    behaviour: Behaviour = field(default_factory=Behaviour)


@dataclass(frozen=True, slots=True)
class Send:
    """One message the channels received, at simulated time `at`."""

    debtor_id: int
    at: datetime
    channel: str


@dataclass(frozen=True)
class SimulationResult:
    debtors: int
    days: int
    messages: int
    messages_per_debtor_mean: float
    messages_per_debtor_p95: int
    messages_per_debtor_max: int
    max_contacts_7_days: int
    quiet_hour_violations: int
    cap_violations: int
    recovery: dict[int, float]  # day -> share of the starting balance recovered by then
    outcomes: dict[str, int]  # reaction -> count
    messages_by_debtor: dict[int, int] = field(repr=False)
    sends: tuple[Send, ...] = field(repr=False)

    def figures(self) -> dict[str, object]:
        """The numbers managers read, without the per-message detail."""
        names = ("debtors", "days", "messages", "messages_per_debtor_mean", "messages_per_debtor_p95",
                 "messages_per_debtor_max", "max_contacts_7_days", "quiet_hour_violations", "cap_violations",
                 "recovery", "outcomes")  # fmt: skip
        return {name: getattr(self, name) for name in names}


class SimulatedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RecordingChannel:
    """A channel adapter that delivers nothing and remembers (message id, simulated time) of each send."""

    capabilities = ChannelCapabilities()

    def __init__(self, name: str, clock: SimulatedClock, log: list[tuple[int, datetime, str]]) -> None:
        self.name = name
        self.clock = clock
        self.log = log

    def parse(self, request: object) -> object:
        raise NotImplementedError("the simulation receives nothing through channels")

    def send(self, message: OutboundMessage) -> SendResult:
        self.log.append((message.message_id or 0, self.clock(), self.name))
        return SendResult(f"sim-{self.name}-{len(self.log)}")


# --- the run ----------------------------------------------------------------------------------------------


def simulate(config: SimulationConfig) -> SimulationResult:
    """Run the cadences for `config.days` of simulated time on a scratch database; nothing real is touched."""
    with tempfile.TemporaryDirectory(prefix="cobrabot-sim-") as directory:
        url = f"sqlite:///{Path(directory) / 'simulation.db'}"
        upgrade(url)
        database = Database(url)
        try:
            return _Run(database, config).execute()
        finally:
            database.dispose()


Event = tuple[datetime, int, str, int, int]  # (when, tie-break, kind, debtor id, amount or promise id)


class _Run:
    def __init__(self, database: Database, config: SimulationConfig) -> None:
        self.database = database
        self.config = config
        self.rng = random.Random(config.seed)
        self.clock = SimulatedClock(config.start)
        self.log: list[tuple[int, datetime, str]] = []
        registry = ChannelRegistry()
        for name in CHANNELS:
            registry.register(RecordingChannel(name, self.clock, self.log))
        # rates={}: no per-second throttling, which would read the wall clock rather than the simulated one.
        self.dispatcher = Dispatcher(database, registry, self.clock, whatsapp_templates={}, rates={}, batch_size=500)
        self.events: list[Event] = []
        self.sequence = 0
        self.seen = 0
        self.message_debtor: dict[int, int] = {}
        self.never_pays: set[int] = set()
        self.busy: set[int] = set()  # debtors with a reaction pending: later messages do not change it
        self.outcomes: dict[str, int] = defaultdict(int)

    def execute(self) -> SimulationResult:
        creditor_id, starting, zones = self._populate()
        end = self.config.start + timedelta(days=self.config.days)
        last_scored: date | None = None
        portfolio_zones = {zone for zone, _country in zones.values()}
        while self.clock.now < end:
            now = self.clock.now
            with self.database.unit_of_work() as uow:
                session = uow.session
                applied = self._apply_events(session, now)
                if last_scored != now.date():  # the risk score moves slowly: once a simulated day is plenty
                    score_debtors(session, creditor_id, now)
                    last_scored = now.date()
                broken = 0
                previous = now - self.config.step
                # Promises only change when money arrives (an event) or a debtor's calendar day turns over
                # (reminder on the eve, broken after the date): between those, maintenance would find nothing.
                day_turned = any(_local_time_passed(previous, now, z, time()) for z in portfolio_zones)
                if (applied or day_turned) and session.scalar(select(exists().where(PromiseToPay.status == "pending"))):
                    remind_promises(session, now)
                    broken = resolve_promises(session, now).broken
                # Only a broken promise lets a debtor back into the sequence; reactions only take them out.
                if broken or any(_local_time_passed(previous, now, z, REMINDER_HOUR) for z in portfolio_zones):
                    plan_reminders(session, now)
                uow.commit()
            if self._outbox_due(now):
                self._dispatch()
            self._react(now)
            self.clock.now = now + self.config.step
        return self._result(creditor_id, starting, zones)

    # --- the synthetic portfolio

    def _populate(self) -> tuple[int, int, dict[int, tuple[ZoneInfo, str | None]]]:
        country = self.config.creditor_country.upper()
        zones, currency, locale, typical = COUNTRIES.get(country, FALLBACK_COUNTRY)
        digits = Money(0, currency).digits
        starting = 0
        placed: dict[int, tuple[ZoneInfo, str | None]] = {}
        with self.database.unit_of_work() as uow:
            session = uow.session
            creditor = Creditor(slug="simulation", name="Simulated Creditor", country=country, currency=currency,
                                default_locale=locale, timezone=zones[0], created_at=self.config.start)  # fmt: skip
            session.add(creditor)
            session.flush()
            for index in range(self.config.debtors):
                debtor = self._debtor(creditor, index, zones, locale)
                session.add(debtor)
                session.flush()
                placed[debtor.id] = (ZoneInfo(debtor.timezone), debtor.country or country)
                if self.rng.random() < self.config.behaviour.never_pays:
                    self.never_pays.add(debtor.id)
                for number in range(1 + (self.rng.random() < 0.3)):
                    amount = max(1, round(self.rng.lognormvariate(math.log(typical), 0.6))) * 10**digits
                    due = self.config.start.date() + timedelta(days=self.rng.randrange(DUE_WINDOW_DAYS))
                    session.add(
                        Invoice(creditor_id=creditor.id, debtor_id=debtor.id, number=f"SIM-{index}-{number}",
                                amount_minor=amount, balance_minor=amount, currency=currency, due_date=due,
                                status="open", created_at=self.config.start)
                    )  # fmt: skip
                    starting += amount
            uow.commit()
            return creditor.id, starting, placed

    def _debtor(self, creditor: Creditor, index: int, zones: Sequence[str], locale: str) -> Debtor:
        # Most debtors live in the creditor's main zone; the rest are spread over the country's other zones.
        zone = zones[0] if self.rng.random() < 0.7 else self.rng.choice(zones)
        preference = ["sms", "email"] if self.rng.random() < 0.7 else ["email", "sms"]
        return Debtor(
            creditor_id=creditor.id, external_ref=f"SIM-{index:06d}", name=f"Debtor {index}",
            phone=f"+1555{index:07d}", email=f"debtor{index}@example.invalid", locale=locale, timezone=zone,
            country=creditor.country, channel_preference=preference, created_at=self.config.start,
        )  # fmt: skip

    # --- sending

    def _dispatch(self) -> None:
        # Deferred rows move to a later next_attempt_at, so this ends once nothing is due at this moment.
        while True:
            report = self.dispatcher.run_once()
            if not (report.sent or report.deferred or report.blocked or report.retried):
                return

    def _outbox_due(self, now: datetime) -> bool:
        """Whether the dispatcher has anything to lease (a cheap check that saves an empty lease transaction)."""
        with self.database.engine.connect() as connection:
            due = select(Outbox.id).where(Outbox.status == "pending", Outbox.next_attempt_at <= now).limit(1)
            return connection.execute(due).first() is not None

    def _new_sends(self) -> list[tuple[int, datetime, str]]:
        fresh = self.log[self.seen :]
        self.seen = len(self.log)
        return sorted(fresh, key=lambda entry: (entry[1], entry[0]))

    # --- the debtors' side

    def _react(self, now: datetime) -> None:
        fresh = self._new_sends()
        if not fresh:
            return
        with self.database.session() as session:
            ids = [message_id for message_id, _, _ in fresh]
            rows = session.execute(select(Message.id, Message.debtor_id).where(Message.id.in_(ids))).tuples()
            self.message_debtor.update(dict(rows.all()))
        for message_id, at, _channel in fresh:
            debtor_id = self.message_debtor[message_id]
            if debtor_id in self.never_pays or debtor_id in self.busy:
                continue
            kind = self._draw()
            self.outcomes[kind] += 1
            if kind != "ignore":
                self.busy.add(debtor_id)
                delay = timedelta(hours=self.rng.randint(1, self.config.behaviour.max_reaction_hours))
                self._schedule(at + delay, kind, debtor_id)

    def _draw(self) -> str:
        behaviour = self.config.behaviour
        roll = self.rng.random()
        for kind, share in (("pay_full", behaviour.pay_full), ("pay_partial", behaviour.pay_partial),
                            ("promise", behaviour.promise), ("opt_out", behaviour.opt_out),
                            ("dispute", behaviour.dispute)):  # fmt: skip
            if roll < share:
                return kind
            roll -= share
        return "ignore"

    def _schedule(self, when: datetime, kind: str, debtor_id: int, value: int = 0) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, self.sequence, kind, debtor_id, value))

    def _apply_events(self, session: Session, now: datetime) -> bool:
        """Apply the reactions due by `now`; True if any was."""
        applied = False
        while self.events and self.events[0][0] <= now:
            applied = True
            _when, _seq, kind, debtor_id, value = heapq.heappop(self.events)
            debtor = session.get_one(Debtor, debtor_id)
            if kind == "pay_full":
                self._pay(session, debtor, now, share=1.0)
            elif kind == "pay_partial":
                self._pay(session, debtor, now, share=self.rng.uniform(0.3, 0.7))
            elif kind == "promise":
                self._promise(session, debtor, now)
                continue  # still busy until the promise is kept or broken
            elif kind == "promised_payment":
                self._pay(session, debtor, now, share=1.0, amount=value)
            elif kind == "opt_out":
                session.add(ConsentOptOut(debtor_id=debtor_id, channel="all", source="keyword", created_at=now))
            elif kind == "dispute":
                self._dispute(session, debtor, now)
            self.busy.discard(debtor_id)
        session.flush()
        return applied

    def _balance(self, session: Session, debtor_id: int) -> tuple[int, str, Invoice | None]:
        invoices = open_invoices(session, debtor_id)
        total = sum(invoice.balance_minor for invoice in invoices)
        return total, invoices[0].currency if invoices else "", invoices[0] if invoices else None

    def _pay(self, session: Session, debtor: Debtor, now: datetime, *, share: float, amount: int = 0) -> None:
        balance, currency, _first = self._balance(session, debtor.id)
        paid = min(balance, amount or max(1, round(balance * share)))
        if paid <= 0:
            return
        self.sequence += 1
        received = ReceivedPayment(ACTOR, f"sim-{self.sequence}", Money(paid, currency), now)
        record_payment(session, debtor, received, ACTOR, now)

    def _promise(self, session: Session, debtor: Debtor, now: datetime) -> None:
        balance, currency, first = self._balance(session, debtor.id)
        if first is None:
            self.busy.discard(debtor.id)
            return
        today = now.astimezone(ZoneInfo(debtor.timezone)).date()
        promised = today + timedelta(days=self.rng.randint(3, 10))
        session.add(
            PromiseToPay(debtor_id=debtor.id, invoice_id=first.id, amount_minor=balance, currency=currency,
                         promised_date=promised, status="pending", created_at=now)
        )  # fmt: skip
        if self.rng.random() < self.config.behaviour.promise_kept:
            # Paid some time before the promised day ends; never before the promise itself.
            pay_at = max(now + timedelta(hours=1), now + (promised - today) * self.rng.random())
            self._schedule(pay_at, "promised_payment", debtor.id, balance)
        else:
            # A broken promise: the debtor becomes reachable again once promise maintenance marks it broken.
            self._schedule(now + timedelta(days=(promised - today).days + 1), "promise_lapsed", debtor.id)

    def _dispute(self, session: Session, debtor: Debtor, now: datetime) -> None:
        _balance, _currency, first = self._balance(session, debtor.id)
        session.add(
            Case(debtor_id=debtor.id, invoice_id=first.id if first else None, kind="dispute", status="open",
                 reason="simulated dispute", created_at=now)
        )  # fmt: skip

    # --- the figures

    def _result(
        self, creditor_id: int, starting: int, placed: dict[int, tuple[ZoneInfo, str | None]]
    ) -> SimulationResult:
        with self.database.session() as session:
            creditor = session.get_one(Creditor, creditor_id)
            overrides = dict(creditor.compliance_rules or {})
            payments = session.execute(
                select(Payment.received_at, func.sum(Payment.amount_minor))
                .where(Payment.status == "confirmed")
                .group_by(Payment.received_at)
            ).all()
        sends = tuple(Send(self.message_debtor[message_id], at, channel) for message_id, at, channel in self.log)
        book = RuleBook()
        rules = {debtor_id: book(country, overrides) for debtor_id, (_zone, country) in placed.items()}
        by_debtor = _by_debtor(sends, placed)
        counts = [len(by_debtor.get(debtor_id, [])) for debtor_id in placed]
        return SimulationResult(
            debtors=len(placed),
            days=self.config.days,
            messages=len(sends),
            messages_per_debtor_mean=round(sum(counts) / len(counts), 2) if counts else 0.0,
            messages_per_debtor_p95=percentile(counts, 95),
            messages_per_debtor_max=max(counts, default=0),
            max_contacts_7_days=max(
                (max_in_window(times, timedelta(days=7)) for times in by_debtor.values()), default=0
            ),
            quiet_hour_violations=sum(
                time_block(rules[s.debtor_id], placed[s.debtor_id][1], placed[s.debtor_id][0], s.at) is not None
                for s in sends
            ),
            cap_violations=sum(
                cap_violations(rules[debtor_id], [t.astimezone(placed[debtor_id][0]).date() for t in times])
                for debtor_id, times in by_debtor.items()
            ),
            recovery=recovery_curve(payments, starting, self.config.start, self.config.days),
            outcomes=dict(sorted(self.outcomes.items())),
            messages_by_debtor={debtor_id: count for debtor_id, count in zip(placed, counts, strict=True)},
            sends=sends,
        )


def _local_time_passed(previous: datetime, now: datetime, zone: ZoneInfo, clock: time) -> bool:
    """Whether the wall-clock time `clock` (the cadence's 10:00 send time, or midnight) fell in (previous, now]
    in `zone`.

    Cadence steps only fall due at that wall-clock time, so between such moments `plan_reminders` can only
    find something new after a state change (a reaction applied, a promise kept or broken): skipping the
    other steps gives the same plan and keeps a year of hourly steps fast.
    """
    today = now.astimezone(zone).date()
    moments = (datetime.combine(today - timedelta(days=back), clock, zone) for back in (0, 1))
    return any(previous < moment <= now for moment in moments)


# --- metrics (pure functions) -----------------------------------------------------------------------------


def _by_debtor(sends: Sequence[Send], placed: dict[int, tuple[ZoneInfo, str | None]]) -> dict[int, list[datetime]]:
    grouped: dict[int, list[datetime]] = defaultdict(list)
    for send in sends:
        grouped[send.debtor_id].append(send.at)
    return {debtor_id: sorted(times) for debtor_id, times in grouped.items() if debtor_id in placed}


def percentile(values: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile (the smallest value with at least pct% of values at or below it)."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def max_in_window(times: Sequence[datetime], width: timedelta) -> int:
    """The most of `times` (sorted) that fall in any half-open window [t, t + width)."""
    best = 0
    for index, start in enumerate(times):
        best = max(best, bisect_left(times, start + width, lo=index) - index)
    return best


def cap_violations(rules: RuleSet, days: Sequence[date]) -> int:
    """Sends that took a debtor over the daily cap (one local day) or the weekly cap (seven local days)."""
    ordered = sorted(days)
    over = 0
    for index, day in enumerate(ordered):
        before = ordered[: index + 1]
        same_day = sum(1 for d in before if d == day)
        same_week = sum(1 for d in before if d > day - timedelta(days=7))
        daily = rules.daily_cap is not None and same_day > rules.daily_cap
        weekly = rules.weekly_cap is not None and same_week > rules.weekly_cap
        over += daily or weekly
    return over


def recovery_curve(
    payments: Sequence[tuple[datetime, int]], starting: int, start: datetime, days: int
) -> dict[int, float]:
    """Share of the starting balance paid by each checkpoint day that the run reached."""
    marks = [day for day in CHECKPOINTS if day <= days] or [days]
    curve = {}
    for day in marks:
        cutoff = start + timedelta(days=day)
        paid = sum(int(amount) for at, amount in payments if _aware(at) <= cutoff)
        curve[day] = round(paid / starting, 4) if starting else 0.0
    return curve


def _aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def describe(result: SimulationResult) -> Iterator[str]:
    """The report as lines of text, for the CLI."""
    yield f"debtors: {result.debtors}   days: {result.days}   messages sent: {result.messages}"
    yield (
        f"messages per debtor: mean {result.messages_per_debtor_mean:.2f}, p95 {result.messages_per_debtor_p95}, "
        f"max {result.messages_per_debtor_max}"
    )
    yield f"max contacts to one debtor in any 7 days: {result.max_contacts_7_days}"
    yield f"quiet-hour violations: {result.quiet_hour_violations} (must be 0)"
    yield f"cap violations: {result.cap_violations} (must be 0)"
    curve = ", ".join(f"day {day}: {share:.1%}" for day, share in result.recovery.items())
    yield f"recovered (share of starting balance): {curve}"
    yield "debtor reactions: " + (", ".join(f"{kind} {count}" for kind, count in result.outcomes.items()) or "none")
