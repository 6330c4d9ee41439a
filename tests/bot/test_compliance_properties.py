"""The gate's time and cap rules as properties over every IANA zone, with instants drawn near each zone's DST
transitions: an allowed send is never in the debtor's quiet hours, a deferral always lands inside allowed
hours, and following the gate's answers never takes a debtor over a cap. Judged by plain wall-clock arithmetic,
not by the gate's own helpers."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.compliance import ContactContext, ContactPolicy, PriorContact, RuleBook, RuleSet

POLICY = ContactPolicy()
ALL_ZONES = sorted(available_timezones())
COUNTRIES = ["CL", "MX", "US", None]


@functools.cache
def transitions(zone_name: str, year: int) -> tuple[datetime, ...]:
    """The UTC instants (to the hour) at which `zone_name` changed its offset during `year`."""
    zone = ZoneInfo(zone_name)
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    previous = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        moment += timedelta(hours=1)
        offset = moment.astimezone(zone).utcoffset()
        if offset != previous:
            found.append(moment)
            previous = offset
    return tuple(found)


@st.composite
def zoned_instants(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone from all of IANA's, and an instant that is either anywhere or within a day of a DST change."""
    zone_name = draw(st.sampled_from(ALL_ZONES))
    year = draw(st.integers(min_value=2025, max_value=2028))
    changes = transitions(zone_name, year)
    if changes and draw(st.booleans()):
        around = draw(st.sampled_from(changes))
        return zone_name, around + timedelta(minutes=draw(st.integers(min_value=-26 * 60, max_value=26 * 60)))
    start = datetime(year, 1, 1, tzinfo=UTC)
    return zone_name, start + timedelta(minutes=draw(st.integers(min_value=0, max_value=365 * 24 * 60)))


def context(zone_name: str, country: str | None, sent: tuple[datetime, ...] = ()) -> ContactContext:
    prior = tuple(PriorContact(at, "sms") for at in sent)
    return ContactContext(timezone=zone_name, country=country, channel="sms", initiated_by="bot",
                          prior_contacts=prior, has_prior_contact=bool(prior))  # fmt: skip


def inside_hours(rules: RuleSet, zone_name: str, moment: datetime) -> bool:
    """Wall-clock hours and banned weekdays, restated (holidays are checked in test_compliance)."""
    wall = moment.astimezone(ZoneInfo(zone_name))
    if wall.weekday() in rules.no_contact_weekdays:
        return False
    start = time.fromisoformat(rules.allowed_hours.start)
    end = None if rules.allowed_hours.end == "24:00" else time.fromisoformat(rules.allowed_hours.end)
    return start <= wall.time().replace(tzinfo=None) and (end is None or wall.time() < end)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=zoned_instants(), country=st.sampled_from(COUNTRIES))
def test_in_every_zone_an_allowed_send_is_inside_hours_and_a_deferral_lands_inside_them(
    where: tuple[str, datetime], country: str | None
):
    zone_name, now = where
    ctx = context(zone_name, country)
    rules = POLICY.rules(ctx)
    decision = POLICY.decide(ctx, now)
    if decision.allowed:
        assert inside_hours(rules, zone_name, now)
        return
    assert decision.verdict == "defer" and decision.until is not None
    assert decision.until > now
    assert inside_hours(rules, zone_name, decision.until)
    assert POLICY.decide(ctx, decision.until).allowed


def local_days(sent: list[datetime], zone_name: str) -> list[date]:
    zone = ZoneInfo(zone_name)
    return sorted(moment.astimezone(zone).date() for moment in sent)


def assert_within_caps(rules: RuleSet, days: list[date]) -> None:
    for day in days:
        same_day = sum(1 for other in days if other == day)
        same_week = sum(1 for other in days if day - timedelta(days=6) <= other <= day)
        assert rules.daily_cap is None or same_day <= rules.daily_cap, (day, days)
        assert rules.weekly_cap is None or same_week <= rules.weekly_cap, (day, days)
    gaps = [(later - earlier).days for earlier, later in pairwise(days)]
    assert all(gap >= rules.min_days_between for gap in gaps), days


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=zoned_instants(),
    country=st.sampled_from(COUNTRIES),
    gaps=st.lists(st.integers(min_value=0, max_value=3 * 24 * 60), min_size=1, max_size=15),
)
def test_sending_whenever_the_gate_lets_us_never_exceeds_a_cap(
    where: tuple[str, datetime], country: str | None, gaps: list[int]
):
    """A dispatcher that tries at random moments, sends when allowed and retries deferrals at `until`."""
    zone_name, moment = where
    rules = RuleBook()(country, {})
    sent: list[datetime] = []
    for gap in gaps:
        moment = max([moment + timedelta(minutes=gap), *sent[-1:]])
        decision = POLICY.decide(context(zone_name, country, tuple(sent)), moment)
        if decision.verdict == "defer":
            assert decision.until is not None
            moment = decision.until
            decision = POLICY.decide(context(zone_name, country, tuple(sent)), moment)
        assert decision.allowed, decision
        assert inside_hours(rules, zone_name, moment)
        sent.append(moment)
    assert_within_caps(rules, local_days(sent, zone_name))
