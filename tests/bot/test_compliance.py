"""The compliance gate: each rule's allow / defer / block with its reason, defer-until across midnight,
weekends, holidays and DST, caps, consent, disputes, WhatsApp's window, disclosure, creditor overrides,
load_context against the real database, and property tests judged by an independent re-statement of the
time rules (`allowed_independently`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import event, select

from bot.compliance import (
    Attempt,
    ContactContext,
    ContactPolicy,
    Decision,
    PriorContact,
    Reason,
    RuleBook,
    RuleSet,
    holiday_dates,
    load_context,
    local_instant,
)
from bot.models import Case, ConsentOptOut, Conversation, Creditor, Debtor, Invoice, Message, Outbox, ScheduledReminder
from bot.store import Database

POLICY = ContactPolicy()
SANTIAGO, NEW_YORK, MEXICO = ZoneInfo("America/Santiago"), ZoneInfo("America/New_York"), ZoneInfo("America/Mexico_City")


def local(zone: ZoneInfo, *parts: int) -> datetime:
    """An aware UTC instant from a local wall-clock time (no test uses an ambiguous one through this)."""
    return datetime(*parts, tzinfo=zone).astimezone(UTC)


def ctx(**fields: Any) -> ContactContext:
    values: dict[str, Any] = {
        "timezone": "America/Santiago",
        "country": "CL",
        "channel": "sms",
        "initiated_by": "bot",
    } | fields
    return ContactContext(**values)


def fixed(**rules: Any) -> ContactPolicy:
    """A policy with exactly these rules, whatever the country."""
    rule_set = RuleSet.model_validate(rules)
    return ContactPolicy(rules_for=lambda _country, _overrides: rule_set)


def contacts(*moments: datetime, channel: str = "sms", invoice_id: int | None = None) -> tuple[PriorContact, ...]:
    return tuple(PriorContact(moment, channel, invoice_id) for moment in moments)


def deferred(decision: Decision, reason: Reason, until: datetime) -> bool:
    return (decision.verdict, decision.reason, decision.until) == ("defer", reason, until)


# --- quiet hours, weekdays, holidays ------------------------------------------------------------------------


def test_a_weekday_afternoon_in_santiago_is_allowed():
    decision = POLICY.decide(ctx(), local(SANTIAGO, 2026, 11, 25, 12, 0))
    assert (decision.verdict, decision.reason, decision.until) == ("allow", Reason.OK, None)


def test_before_the_start_defers_to_the_first_allowed_minute_the_same_day():
    decision = POLICY.decide(ctx(), local(SANTIAGO, 2026, 11, 25, 7, 59, 30))
    assert deferred(decision, Reason.QUIET_HOURS, local(SANTIAGO, 2026, 11, 25, 8, 0))
    assert decision.until is not None and decision.until.tzinfo is UTC


def test_the_end_of_the_window_is_exclusive_and_defers_across_midnight():
    assert POLICY.decide(ctx(), local(SANTIAGO, 2026, 11, 25, 19, 59)).allowed
    decision = POLICY.decide(ctx(), local(SANTIAGO, 2026, 11, 25, 20, 0))
    assert deferred(decision, Reason.QUIET_HOURS, local(SANTIAGO, 2026, 11, 26, 8, 0))
    assert "2026-11-26 08:00 America/Santiago" in decision.detail


def test_us_and_mexican_windows_differ_from_chiles():
    us = ctx(timezone="America/New_York", country="US")
    assert POLICY.decide(us, local(NEW_YORK, 2026, 11, 24, 20, 59)).allowed
    assert deferred(
        POLICY.decide(us, local(NEW_YORK, 2026, 11, 24, 21, 0)), Reason.QUIET_HOURS, local(NEW_YORK, 2026, 11, 25, 8)
    )
    mx = ctx(timezone="America/Mexico_City", country="MX")
    assert POLICY.decide(mx, local(MEXICO, 2026, 11, 24, 7, 0)).allowed
    assert POLICY.decide(mx, local(MEXICO, 2026, 11, 24, 21, 59)).allowed
    assert deferred(
        POLICY.decide(mx, local(MEXICO, 2026, 11, 24, 6, 59)), Reason.QUIET_HOURS, local(MEXICO, 2026, 11, 24, 7)
    )


def test_quiet_hours_are_the_debtors_not_the_servers_or_the_creditors():
    # 15:00 UTC is noon in Santiago but 06:00 in Honolulu.
    now = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    assert POLICY.decide(ctx(), now).allowed
    decision = POLICY.decide(ctx(timezone="Pacific/Honolulu", country="US"), now)
    assert deferred(decision, Reason.QUIET_HOURS, local(ZoneInfo("Pacific/Honolulu"), 2026, 11, 25, 8))


def test_chile_never_on_sunday_so_saturday_night_waits_until_monday():
    saturday_night = local(SANTIAGO, 2026, 11, 28, 20, 30)
    assert deferred(POLICY.decide(ctx(), saturday_night), Reason.QUIET_HOURS, local(SANTIAGO, 2026, 11, 30, 8))
    sunday_noon = local(SANTIAGO, 2026, 11, 29, 12, 0)
    assert deferred(POLICY.decide(ctx(), sunday_noon), Reason.NO_CONTACT_DAY, local(SANTIAGO, 2026, 11, 30, 8))


def test_mexico_allows_sundays_but_not_christmas():
    mx = ctx(timezone="America/Mexico_City", country="MX")
    assert POLICY.decide(mx, local(MEXICO, 2026, 11, 29, 12, 0)).allowed  # a Sunday
    decision = POLICY.decide(mx, local(MEXICO, 2026, 12, 25, 10, 0))
    assert deferred(decision, Reason.HOLIDAY, local(MEXICO, 2026, 12, 26, 7, 0))


def test_chilean_fiestas_patrias_then_sunday_push_contact_to_monday():
    # 18 (Independence) and 19 (Army Day) September 2026 are holidays, the 20th a Sunday.
    for day, hour in ((17, 20), (18, 10), (19, 9), (20, 12)):
        decision = POLICY.decide(ctx(), local(SANTIAGO, 2026, 9, day, hour, 0))
        assert decision.until == local(SANTIAGO, 2026, 9, 21, 8, 0)
    assert POLICY.decide(ctx(), local(SANTIAGO, 2026, 9, 18, 10)).reason == Reason.HOLIDAY


def test_us_holidays_are_contact_days_unless_the_creditor_says_otherwise():
    thanksgiving = local(NEW_YORK, 2026, 11, 26, 12, 0)
    us = ctx(timezone="America/New_York", country="US")
    assert POLICY.decide(us, thanksgiving).allowed
    strict = ctx(timezone="America/New_York", country="US", creditor_rules={"no_contact_on_holidays": True})
    assert deferred(POLICY.decide(strict, thanksgiving), Reason.HOLIDAY, local(NEW_YORK, 2026, 11, 27, 8))


def test_holidays_follow_the_debtors_country_not_the_creditors_zone():
    # A debtor in Mexico (country MX) of a Chilean creditor: Mexico's Revolution Day, not Chile's calendar.
    decision = POLICY.decide(ctx(timezone="America/Mexico_City", country="MX"), local(MEXICO, 2026, 11, 16, 12))
    assert decision.reason == Reason.HOLIDAY
    assert POLICY.decide(ctx(), local(SANTIAGO, 2026, 11, 16, 12)).allowed


def test_a_country_the_holidays_package_does_not_know_has_no_holidays():
    assert holiday_dates("ZZ", 2026) == frozenset()
    assert holiday_dates(None, 2026) == frozenset()
    assert POLICY.decide(ctx(country="ZZ"), local(SANTIAGO, 2026, 12, 25, 12)).allowed


# --- DST ------------------------------------------------------------------------------------------------------


def test_new_york_spring_forward_day_defers_to_eight_eastern_daylight_time():
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT, so 08:00 that day is 12:00 UTC, not 13:00.
    decision = POLICY.decide(ctx(timezone="America/New_York", country="US"), datetime(2026, 3, 8, 6, 0, tzinfo=UTC))
    assert deferred(decision, Reason.QUIET_HOURS, datetime(2026, 3, 8, 12, 0, tzinfo=UTC))


def test_new_york_fall_back_day_defers_to_eight_eastern_standard_time():
    decision = POLICY.decide(ctx(timezone="America/New_York", country="US"), datetime(2026, 11, 1, 4, 0, tzinfo=UTC))
    assert deferred(decision, Reason.QUIET_HOURS, datetime(2026, 11, 1, 13, 0, tzinfo=UTC))


def test_santiago_spring_forward_weekend_changes_the_offset_of_monday_morning():
    # Saturday 2026-09-05 20:30 is -04; clocks jump at midnight; Sunday is closed; Monday 08:00 is -03.
    saturday = datetime(2026, 9, 6, 0, 30, tzinfo=UTC)
    assert saturday.astimezone(SANTIAGO).utcoffset() == timedelta(hours=-4)
    decision = POLICY.decide(ctx(), saturday)
    assert deferred(decision, Reason.QUIET_HOURS, datetime(2026, 9, 7, 11, 0, tzinfo=UTC))


def test_santiago_fall_back_handles_the_repeated_hour():
    # 2026-04-04 24:00 -03 becomes 23:00 -04; with the window 08:00-24:00 the repeated hour is all allowed.
    policy = fixed(allowed_hours={"start": "08:00", "end": "24:00"}, no_contact_on_holidays=False)
    first_2330 = datetime(2026, 4, 5, 2, 30, tzinfo=UTC)
    second_2330 = datetime(2026, 4, 5, 3, 30, tzinfo=UTC)
    assert first_2330.astimezone(SANTIAGO).hour == second_2330.astimezone(SANTIAGO).hour == 23
    assert policy.decide(ctx(), first_2330).allowed and policy.decide(ctx(), second_2330).allowed
    after_midnight = datetime(2026, 4, 5, 4, 0, tzinfo=UTC)
    assert deferred(policy.decide(ctx(), after_midnight), Reason.QUIET_HOURS, datetime(2026, 4, 5, 12, tzinfo=UTC))


def test_a_window_starting_inside_a_dst_gap_opens_at_the_jump():
    # 02:30 does not exist on 2026-03-08 in New York; the first minute at or after it is 03:00 EDT (07:00 UTC).
    assert local_instant(date(2026, 3, 8), "02:30", NEW_YORK) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    policy = fixed(allowed_hours={"start": "02:30", "end": "20:00"}, no_contact_on_holidays=False)
    decision = policy.decide(ctx(timezone="America/New_York"), datetime(2026, 3, 8, 6, 0, tzinfo=UTC))
    assert deferred(decision, Reason.QUIET_HOURS, datetime(2026, 3, 8, 7, 0, tzinfo=UTC))


def test_an_ambiguous_start_opens_at_its_first_occurrence():
    assert local_instant(date(2026, 11, 1), "01:30", NEW_YORK) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert local_instant(date(2026, 9, 6), "00:00", SANTIAGO) == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)  # a gap


# --- caps -----------------------------------------------------------------------------------------------------


def test_one_bot_message_a_local_calendar_day():
    policy = fixed(no_contact_on_holidays=False)
    sent = contacts(local(SANTIAGO, 2026, 11, 25, 9, 0))
    decision = policy.decide(ctx(prior_contacts=sent), local(SANTIAGO, 2026, 11, 25, 15, 0))
    assert deferred(decision, Reason.DAILY_CAP, local(SANTIAGO, 2026, 11, 26, 8, 0))
    # Calendar days, not 24 rolling hours: 19:59 yesterday does not hold back 08:00 today.
    late = contacts(local(SANTIAGO, 2026, 11, 24, 19, 59))
    assert policy.decide(ctx(prior_contacts=late), local(SANTIAGO, 2026, 11, 25, 8, 0)).allowed


def test_three_a_week_over_any_seven_consecutive_local_days():
    policy = fixed(no_contact_on_holidays=False)
    week = contacts(*(local(SANTIAGO, 2026, 11, day, 10) for day in (23, 24, 25)))  # Mon, Tue, Wed
    decision = policy.decide(ctx(prior_contacts=week), local(SANTIAGO, 2026, 11, 26, 10))
    # Monday the 30th the window is Tue 24 .. Mon 30: two messages, so a third fits.
    assert deferred(decision, Reason.WEEKLY_CAP, local(SANTIAGO, 2026, 11, 30, 8))
    assert policy.decide(ctx(prior_contacts=week), local(SANTIAGO, 2026, 11, 30, 8)).allowed


def test_the_first_failing_cap_names_the_reason_and_the_latest_bound_sets_until():
    policy = fixed(no_contact_on_holidays=False)
    week = contacts(*(local(SANTIAGO, 2026, 11, day, 10) for day in (23, 24, 26)))
    decision = policy.decide(ctx(prior_contacts=week), local(SANTIAGO, 2026, 11, 26, 21))
    assert deferred(decision, Reason.WEEKLY_CAP, local(SANTIAGO, 2026, 11, 30, 8))
    assert "weekly_cap, daily_cap, quiet_hours" in decision.detail


def test_chile_allows_two_a_week_at_least_two_days_apart():
    monday = contacts(local(SANTIAGO, 2026, 11, 23, 10))
    decision = POLICY.decide(ctx(prior_contacts=monday), local(SANTIAGO, 2026, 11, 24, 10))
    assert deferred(decision, Reason.MIN_DAYS_BETWEEN, local(SANTIAGO, 2026, 11, 25, 8))
    assert POLICY.decide(ctx(prior_contacts=monday), local(SANTIAGO, 2026, 11, 25, 8)).allowed  # Monday -> Wednesday
    two = contacts(local(SANTIAGO, 2026, 11, 23, 10), local(SANTIAGO, 2026, 11, 25, 10))
    assert deferred(
        POLICY.decide(ctx(prior_contacts=two), local(SANTIAGO, 2026, 11, 27, 10)),
        Reason.WEEKLY_CAP,
        local(SANTIAGO, 2026, 11, 30, 8),
    )


def test_replies_are_neither_capped_nor_held_to_quiet_hours():
    busy = contacts(*(local(SANTIAGO, 2026, 11, 25, hour) for hour in (9, 10, 11)))
    three_am = local(SANTIAGO, 2026, 11, 29, 3, 0)  # a Sunday, at night
    for initiated_by in ("reply", "agent"):
        decision = POLICY.decide(ctx(initiated_by=initiated_by, prior_contacts=busy), three_am)
        assert (decision.verdict, decision.reason) == ("allow", Reason.OK)


def test_per_channel_caps_only_count_that_channel():
    policy = fixed(daily_cap=None, weekly_cap=None, channel_caps={"sms": {"daily": 1}}, no_contact_on_holidays=False)
    morning = contacts(local(SANTIAGO, 2026, 11, 25, 9), channel="email")
    now = local(SANTIAGO, 2026, 11, 25, 12)
    assert policy.decide(ctx(prior_contacts=morning), now).allowed
    sms = contacts(local(SANTIAGO, 2026, 11, 25, 9), channel="sms")
    assert deferred(
        policy.decide(ctx(prior_contacts=sms), now), Reason.CHANNEL_DAILY_CAP, local(SANTIAGO, 2026, 11, 26, 8)
    )
    assert policy.decide(ctx(prior_contacts=sms, channel="email"), now).allowed


def test_reg_f_seven_in_seven_per_debt():
    us = {"timezone": "America/New_York", "country": "US", "creditor_rules": {"daily_cap": 3, "weekly_cap": None}}
    seven = tuple(
        PriorContact(local(NEW_YORK, 2026, 11, day, 9 + n), "sms", 1) for day in (20, 21, 23) for n in range(3)
    )[:7]
    now = local(NEW_YORK, 2026, 11, 24, 12)
    decision = POLICY.decide(ctx(**us, invoice_id=1, prior_contacts=seven), now)
    # The 7th most recent is on the 20th; on the 27th the window 21..27 holds six.
    assert deferred(decision, Reason.REG_F, local(NEW_YORK, 2026, 11, 27, 8))
    assert POLICY.decide(ctx(**us, invoice_id=2, prior_contacts=seven), now).allowed
    # A message about no particular debt counts for all of them, and is held back by any.
    assert POLICY.decide(ctx(**us, invoice_id=None, prior_contacts=seven), now).reason == Reason.REG_F
    general = tuple(PriorContact(c.at, c.channel, None) for c in seven)
    assert POLICY.decide(ctx(**us, invoice_id=2, prior_contacts=general), now).reason == Reason.REG_F
    # Reg F binds debt collectors, not creditors collecting their own debts: a creditor may switch it off.
    off = us | {"creditor_rules": {"daily_cap": 3, "weekly_cap": None, "reg_f": False}}
    assert POLICY.decide(ctx(**off, invoice_id=1, prior_contacts=seven), now).allowed


# --- consent, disputes, pauses ---------------------------------------------------------------------------------


def test_opt_out_of_one_channel_blocks_only_that_channel():
    now = local(SANTIAGO, 2026, 11, 25, 12)
    decision = POLICY.decide(ctx(opted_out=frozenset({"sms"})), now)
    assert (decision.verdict, decision.reason) == ("block", Reason.OPTED_OUT_CHANNEL)
    assert POLICY.decide(ctx(opted_out=frozenset({"sms"}), channel="email"), now).allowed


def test_opt_out_of_everything_blocks_every_channel_and_replies_too():
    now = local(SANTIAGO, 2026, 11, 25, 12)
    for channel in ("sms", "whatsapp", "email", "telegram"):
        for initiated_by in ("bot", "reply", "agent"):
            decision = POLICY.decide(ctx(opted_out=frozenset({"all"}), channel=channel, initiated_by=initiated_by), now)
            assert (decision.verdict, decision.reason) == ("block", Reason.OPTED_OUT_ALL)


def test_the_opt_out_confirmation_still_goes_out_on_the_opted_out_channel():
    night = local(SANTIAGO, 2026, 11, 25, 23, 0)
    for key, scope in (("opted_out", "sms"), ("opted_out_all", "all")):
        reply = ctx(initiated_by="reply", template_key=key, opted_out=frozenset({scope}))
        assert POLICY.decide(reply, night).allowed
    other = ctx(initiated_by="reply", template_key="balance", opted_out=frozenset({"sms"}))
    assert POLICY.decide(other, night).reason == Reason.OPTED_OUT_CHANNEL


def test_an_open_dispute_stops_bot_contact_but_not_answers():
    now = local(SANTIAGO, 2026, 11, 25, 12)
    decision = POLICY.decide(ctx(dispute_open=True), now)
    assert (decision.verdict, decision.reason, decision.until) == ("block", Reason.DISPUTE_OPEN, None)
    assert POLICY.decide(ctx(dispute_open=True, initiated_by="reply"), now).allowed


def test_paused_collection_defers_until_the_pause_ends_and_then_to_allowed_hours():
    now = local(SANTIAGO, 2026, 11, 25, 12)
    pause_end = local(SANTIAGO, 2026, 11, 27, 15, 17)
    assert deferred(POLICY.decide(ctx(paused_until=pause_end), now), Reason.COLLECTION_PAUSED, pause_end)
    ends_at_night = local(SANTIAGO, 2026, 11, 27, 3, 0)
    decision = POLICY.decide(ctx(paused_until=ends_at_night), now)
    assert deferred(decision, Reason.COLLECTION_PAUSED, local(SANTIAGO, 2026, 11, 27, 8, 0))
    assert POLICY.decide(ctx(paused_until=now - timedelta(minutes=1)), now).allowed
    assert POLICY.decide(ctx(paused_until=pause_end, initiated_by="reply"), now).allowed


# --- WhatsApp -------------------------------------------------------------------------------------------------


def test_whatsapp_outside_the_24_hour_window_needs_a_template():
    now = local(SANTIAGO, 2026, 11, 25, 12)
    inside = ctx(channel="whatsapp", whatsapp_last_inbound_at=now - timedelta(hours=23, minutes=59))
    assert POLICY.decide(inside, now).allowed
    for last_inbound in (now - timedelta(hours=24), None):
        closed = ctx(channel="whatsapp", whatsapp_last_inbound_at=last_inbound)
        decision = POLICY.decide(closed, now)
        assert (decision.verdict, decision.reason) == ("block", Reason.WHATSAPP_WINDOW_CLOSED)
        assert POLICY.decide(ctx(channel="whatsapp", whatsapp_template_available=True), now).allowed
    assert POLICY.decide(ctx(channel="sms", whatsapp_last_inbound_at=None), now).allowed


def test_whatsapp_is_blocked_when_the_window_will_have_closed_by_the_deferred_time():
    night = local(SANTIAGO, 2026, 11, 25, 22, 0)
    closing = ctx(channel="whatsapp", whatsapp_last_inbound_at=night - timedelta(hours=20))
    decision = POLICY.decide(closing, night)
    assert (decision.verdict, decision.reason) == ("block", Reason.WHATSAPP_WINDOW_CLOSED)
    still_open = ctx(channel="whatsapp", whatsapp_last_inbound_at=night - timedelta(hours=1))
    assert deferred(POLICY.decide(still_open, night), Reason.QUIET_HOURS, local(SANTIAGO, 2026, 11, 26, 8))


# --- disclosure, overrides, storage ---------------------------------------------------------------------------


def test_first_bot_contact_requires_the_configured_disclosure():
    rules = {"first_contact_disclosure": "validation_notice"}
    now = local(NEW_YORK, 2026, 11, 24, 12)
    first = POLICY.decide(ctx(timezone="America/New_York", country="US", creditor_rules=rules), now)
    assert (first.verdict, first.reason, first.requires_disclosure) == ("allow", Reason.DISCLOSURE_REQUIRED, True)
    assert first.disclosure_template == "validation_notice"
    later = POLICY.decide(
        ctx(timezone="America/New_York", country="US", creditor_rules=rules, has_prior_contact=True), now
    )
    assert (later.reason, later.requires_disclosure, later.disclosure_template) == (Reason.OK, False, None)
    assert not POLICY.decide(ctx(), local(SANTIAGO, 2026, 11, 25, 12)).requires_disclosure  # not configured


def test_creditor_override_json_tightens_hours_days_and_caps():
    rules = {
        "allowed_hours": {"start": "09:00", "end": "19:00"},
        "no_contact_on_holidays": True,
        "no_contact_weekdays": [5, 6],
        "daily_cap": 1,
        "weekly_cap": 3,
        "reg_f": False,
        "first_contact_disclosure": None,
    }
    mx = {"timezone": "America/Mexico_City", "country": "MX", "creditor_rules": rules}
    early = POLICY.decide(ctx(**mx), local(MEXICO, 2026, 11, 24, 8, 30))
    assert deferred(early, Reason.QUIET_HOURS, local(MEXICO, 2026, 11, 24, 9, 0))
    saturday = POLICY.decide(ctx(**mx), local(MEXICO, 2026, 11, 28, 12))
    assert deferred(saturday, Reason.NO_CONTACT_DAY, local(MEXICO, 2026, 11, 30, 9))


def test_creditor_overrides_cannot_loosen_a_countrys_statutory_floor():
    loose = {"allowed_hours": {"start": "06:00", "end": "23:00"}, "no_contact_weekdays": [], "weekly_cap": 5}
    rules = RuleBook()("CL", loose)
    assert (rules.allowed_hours.start, rules.allowed_hours.end) == ("08:00", "20:00")
    assert rules.no_contact_weekdays == {6} and rules.weekly_cap == 2 and rules.no_contact_on_holidays
    us = RuleBook()("US", {"allowed_hours": {"start": "07:00", "end": "22:00"}, "daily_cap": None})
    assert (us.allowed_hours.start, us.allowed_hours.end, us.daily_cap) == ("08:00", "21:00", None)
    # Where there is no statutory floor the creditor's word stands; the base covers unknown countries.
    assert RuleBook()("AR", loose).allowed_hours.start == "06:00"
    assert RuleBook()(None, {}) == RuleSet()


def test_overrides_leaving_no_allowed_time_block_instead_of_deferring_forever():
    evening = ctx(creditor_rules={"allowed_hours": {"start": "20:00", "end": "23:00"}})
    decision = POLICY.decide(evening, local(SANTIAGO, 2026, 11, 25, 12))
    assert (decision.verdict, decision.reason) == ("block", Reason.NO_ALLOWED_TIME)
    never = ctx(country="AR", creditor_rules={"no_contact_weekdays": list(range(7))})
    assert POLICY.decide(never, local(SANTIAGO, 2026, 11, 25, 12)).reason == Reason.NO_ALLOWED_TIME


@pytest.mark.parametrize(
    "bad",
    [
        {"allowed_hour": {"start": "09:00", "end": "19:00"}},
        {"allowed_hours": {"start": "19:00", "end": "09:00"}},
        {"allowed_hours": {"start": "9:00", "end": "19:00"}},
        {"no_contact_weekdays": [7]},
        {"daily_cap": 0},
        {"channel_caps": {"sms": {"monthly": 3}}},
    ],
)
def test_malformed_creditor_rules_are_refused(bad: dict[str, Any]):
    with pytest.raises(ValidationError):
        RuleBook()("CL", bad)


def test_rule_sets_round_trip_through_json():
    rules = RuleBook()("CL", {"channel_caps": {"whatsapp": {"weekly": 1}}, "first_contact_disclosure": "notice"})
    assert RuleSet.model_validate_json(rules.model_dump_json()) == rules


def test_decision_as_stored_fits_the_outbox_column():
    decision = POLICY.decide(ctx(), local(SANTIAGO, 2026, 11, 25, 21, 0))
    assert decision.as_stored() == "defer:quiet_hours until 2026-11-26T11:00Z"
    assert Decision("block", Reason.DISPUTE_OPEN).as_stored() == "block:dispute_open"


def test_bad_inputs_fail_loudly():
    with pytest.raises(ValueError, match="initiated_by"):
        ctx(initiated_by="campaign")
    with pytest.raises(ValueError, match="aware"):
        POLICY.decide(ctx(), datetime(2026, 11, 25, 12))
    with pytest.raises(Exception, match="Mars"):
        ctx(timezone="Mars/Olympus_Mons")


# --- load_context against the real database -------------------------------------------------------------------

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def add_outbound(
    session: Any, debtor_id: int, at: datetime, *, channel: str = "sms", initiated_by: str = "bot", status: str = "sent"
) -> Outbox:
    message = Message(debtor_id=debtor_id, direction="out", channel=channel, body="x", created_at=at)
    session.add(message)
    session.flush()
    row = Outbox(message_id=message.id, channel=channel, initiated_by=initiated_by, status=status, next_attempt_at=at)
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def debtor(make_debtor: Callable[..., Debtor]) -> Debtor:
    return make_debtor(
        invoices=[
            {"number": "F-1", "amount": "45990", "due_date": date(2026, 12, 5)},
            {"number": "F-2", "amount": "10000", "due_date": date(2026, 12, 9)},
        ]
    )


def invoice_ids(db: Database, debtor_id: int) -> list[int]:
    with db.session() as session:
        return list(session.scalars(select(Invoice.id).where(Invoice.debtor_id == debtor_id).order_by(Invoice.id)))


def test_load_context_reads_consent_disputes_pauses_contacts_and_whatsapp(db: Database, debtor: Debtor):
    first, second = invoice_ids(db, debtor.id)
    with db.session() as session:
        row = session.get_one(Debtor, debtor.id)
        row.country, row.timezone = "MX", "America/Mexico_City"
        row.collection_paused_until = NOW + timedelta(days=2)
        session.get_one(Creditor, row.creditor_id).compliance_rules = {"daily_cap": 2}
        session.add_all(
            [
                ConsentOptOut(debtor_id=debtor.id, channel="email", source="keyword", created_at=NOW),
                ConsentOptOut(debtor_id=debtor.id, channel="sms", source="keyword", created_at=NOW, revoked_at=NOW),
                Case(debtor_id=debtor.id, kind="dispute", status="open"),
                Conversation(debtor_id=debtor.id, channel="whatsapp", address="+56961234567",
                             last_inbound_at=NOW - timedelta(hours=3)),
            ]
        )  # fmt: skip
        linked = add_outbound(session, debtor.id, NOW - timedelta(days=1), channel="whatsapp")
        session.add(ScheduledReminder(invoice_id=first, debtor_id=debtor.id, step_key="d-3", due_at=NOW,
                                      outbox_id=linked.id))  # fmt: skip
        add_outbound(session, debtor.id, NOW - timedelta(days=3))
        add_outbound(session, debtor.id, NOW - timedelta(days=30))  # too old to matter
        add_outbound(session, debtor.id, NOW - timedelta(hours=1), initiated_by="reply")
        add_outbound(session, debtor.id, NOW - timedelta(hours=2), status="pending")
        add_outbound(session, debtor.id, NOW - timedelta(hours=2), status="cancelled")
        session.commit()
        context = load_context(session, Attempt(debtor.id, "whatsapp", "bot", "reminder_due", second), NOW)

    assert (context.timezone, context.country, context.channel, context.invoice_id) == (
        "America/Mexico_City", "MX", "whatsapp", second
    )  # fmt: skip
    assert context.opted_out == {"email"}
    assert context.dispute_open and context.has_prior_contact
    assert context.paused_until == NOW + timedelta(days=2)
    assert context.creditor_rules == {"daily_cap": 2}
    assert context.prior_contacts == (
        PriorContact(NOW - timedelta(days=3), "sms", None),
        PriorContact(NOW - timedelta(days=1), "whatsapp", first),
    )
    assert context.whatsapp_last_inbound_at == NOW - timedelta(hours=3)
    assert context.whatsapp_last_inbound_at.tzinfo is not None
    assert POLICY.decide(context, NOW).reason == Reason.DISPUTE_OPEN


def test_load_context_for_a_quiet_debtor_falls_back_to_the_creditors_country(db: Database, debtor: Debtor):
    with db.session() as session:
        add_outbound(session, debtor.id, NOW - timedelta(hours=1), initiated_by="reply")
        session.commit()
        context = load_context(session, Attempt(debtor.id, "sms"), NOW, whatsapp_template_available=True)
    assert (context.country, context.opted_out, context.dispute_open) == ("CL", frozenset(), False)
    assert (context.prior_contacts, context.has_prior_contact, context.paused_until) == ((), False, None)
    assert context.whatsapp_last_inbound_at is None and context.whatsapp_template_available
    assert POLICY.decide(context, NOW).allowed  # 12:00 on a Wednesday in Santiago


def test_a_disputed_invoice_alone_counts_as_an_open_dispute_and_a_resolved_case_does_not(db: Database, debtor: Debtor):
    first, _ = invoice_ids(db, debtor.id)
    with db.session() as session:
        session.add(Case(debtor_id=debtor.id, kind="dispute", status="resolved"))
        session.add(Case(debtor_id=debtor.id, kind="hardship", status="open"))
        session.commit()
        assert not load_context(session, Attempt(debtor.id, "sms"), NOW).dispute_open
        session.get_one(Invoice, first).status = "disputed"
        session.commit()
        assert load_context(session, Attempt(debtor.id, "sms"), NOW).dispute_open


def test_load_context_from_an_outbox_row_finds_its_debt_and_does_not_count_itself(db: Database, debtor: Debtor):
    first, _ = invoice_ids(db, debtor.id)
    with db.session() as session:
        row = add_outbound(session, debtor.id, NOW, status="leased")
        row.message.template_key = "reminder_due"
        session.add(ScheduledReminder(invoice_id=first, debtor_id=debtor.id, step_key="d0", due_at=NOW,
                                      outbox_id=row.id))  # fmt: skip
        session.commit()
        context = load_context(session, row, NOW)
    assert (context.initiated_by, context.template_key, context.invoice_id) == ("bot", "reminder_due", first)
    assert context.prior_contacts == () and not context.has_prior_contact


@pytest.fixture
def count_queries(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", listen)
    yield statements
    event.remove(db.engine, "before_cursor_execute", listen)


def test_load_context_runs_the_same_few_queries_however_many_messages(
    db: Database, debtor: Debtor, count_queries: list[str]
):
    def loaded() -> int:
        with db.session() as session:
            count_queries.clear()
            load_context(session, Attempt(debtor.id, "whatsapp"), NOW)
            return len(count_queries)

    quiet = loaded()
    with db.session() as session:
        for hours in range(40):
            add_outbound(session, debtor.id, NOW - timedelta(hours=hours * 5), channel=("sms", "whatsapp")[hours % 2])
        session.add(ConsentOptOut(debtor_id=debtor.id, channel="email", source="api", created_at=NOW))
        session.commit()
    busy = loaded()
    assert quiet == busy <= 6


# --- properties -----------------------------------------------------------------------------------------------

ZONES = [
    "America/Santiago",
    "America/New_York",
    "America/Mexico_City",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Pacific/Honolulu",
]
COUNTRIES = ["CL", "MX", "US", "GB", "AU", None]


def allowed_independently(rules: RuleSet, country: str | None, zone: ZoneInfo, moment: datetime) -> bool:
    """The time rules restated directly from the holidays package and wall-clock time."""
    wall = moment.astimezone(zone)
    if rules.no_contact_on_holidays and country and wall.date() in holidays.country_holidays(country, years=wall.year):
        return False
    if wall.weekday() in rules.no_contact_weekdays:
        return False
    start = time.fromisoformat(rules.allowed_hours.start)
    end = None if rules.allowed_hours.end == "24:00" else time.fromisoformat(rules.allowed_hours.end)
    return start <= wall.time() and (end is None or wall.time() < end)


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    # Windows start at 04:00 or later and end by 22:45 (or at midnight): real windows never cross a DST
    # transition, so "defer until" is also the *earliest* allowed moment.
    start = draw(st.integers(min_value=16, max_value=80)) * 15
    end = draw(st.one_of(st.integers(min_value=start // 15 + 1, max_value=91).map(lambda q: q * 15), st.just(1440)))
    weekdays = draw(st.frozensets(st.integers(min_value=0, max_value=6), max_size=6))
    return RuleSet(
        allowed_hours={"start": f"{start // 60:02d}:{start % 60:02d}",
                       "end": "24:00" if end == 1440 else f"{end // 60:02d}:{end % 60:02d}"},
        no_contact_on_holidays=draw(st.booleans()),
        no_contact_weekdays=weekdays,
    )  # fmt: skip


moments = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets(), now=moments, zone_name=st.sampled_from(ZONES), country=st.sampled_from(COUNTRIES))
def test_allow_is_never_in_quiet_time_and_defer_lands_on_the_first_allowed_moment(
    rules: RuleSet, now: datetime, zone_name: str, country: str | None
):
    zone = ZoneInfo(zone_name)
    policy = ContactPolicy(rules_for=lambda _country, _overrides: rules)
    decision = policy.decide(ctx(timezone=zone_name, country=country), now)
    if decision.verdict == "allow":
        assert allowed_independently(rules, country, zone, now)
        return
    assert decision.verdict == "defer" and decision.until is not None
    assert not allowed_independently(rules, country, zone, now)
    assert decision.until > now and decision.until.tzinfo is UTC
    assert allowed_independently(rules, country, zone, decision.until)
    just_before = decision.until - timedelta(seconds=1)
    assert just_before < now or not allowed_independently(rules, country, zone, just_before)
    assert decision.until.astimezone(zone).second == 0


@settings(max_examples=200, deadline=None)
@given(
    now=moments,
    zone_name=st.sampled_from(ZONES),
    country=st.sampled_from(["CL", "MX", "US"]),
    ago=st.lists(st.integers(min_value=0, max_value=10 * 24 * 60), max_size=12),
    paused=st.one_of(st.none(), st.integers(min_value=-3 * 24 * 60, max_value=10 * 24 * 60)),
)
def test_defaults_with_caps_and_pauses_defer_only_to_moments_that_would_then_be_allowed(
    now: datetime, zone_name: str, country: str, ago: list[int], paused: int | None
):
    sent = contacts(*(now - timedelta(minutes=minutes) for minutes in ago))
    paused_until = None if paused is None else now + timedelta(minutes=paused)
    context = ctx(timezone=zone_name, country=country, prior_contacts=sent, paused_until=paused_until)
    decision = POLICY.decide(context, now)
    rules = POLICY.rules(context)
    if decision.verdict == "allow":
        assert allowed_independently(rules, country, ZoneInfo(zone_name), now)
        return
    assert decision.verdict == "defer" and decision.until is not None and decision.until > now
    assert allowed_independently(rules, country, ZoneInfo(zone_name), decision.until)
    assert POLICY.decide(context, decision.until).allowed  # nothing new was sent meanwhile
