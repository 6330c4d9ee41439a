"""Payment-plan negotiation: policy parsing and consistency, the offer menu, counter-offers, and check().

The property tests judge every offer twice: with check() and with `assert_within_policy`, an independent
re-statement of the rules using fractions, so a bug shared by the module's helpers cannot hide itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.domain import Money
from bot.negotiation import (
    DEFAULT_POLICY,
    CounterOffer,
    InstallmentTerm,
    NegotiationPolicy,
    OfferKind,
    PlanOffer,
    PolicyTerms,
    Reason,
    check,
    evaluate,
    propose,
)

TODAY = date(2026, 3, 10)
NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


def clp(minor: int) -> Money:
    return Money(minor, "CLP")


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def policy(**fields: Any) -> NegotiationPolicy:
    """A plain policy (no down payment, no discount, no hardship variant) with the given changes."""
    return NegotiationPolicy.model_validate({"min_down_payment_pct": 0, "hardship": None, **fields})


def amounts(offer: PlanOffer) -> list[int]:
    return [term.amount.minor for term in offer.installments]


def due_dates(offer: PlanOffer) -> list[date]:
    return [term.due_date for term in offer.installments]


def reasons(violations: list[Any]) -> set[Reason]:
    return {violation.code for violation in violations}


# --- policy parsing and problems() -------------------------------------------------------------------------


def test_empty_creditor_policy_is_the_default_and_the_default_is_consistent():
    assert NegotiationPolicy.model_validate({}) == DEFAULT_POLICY
    assert DEFAULT_POLICY.problems() == []
    assert DEFAULT_POLICY.terms(hardship=True).max_installments == 12


def test_policy_survives_a_json_round_trip_with_percentages_as_numbers():
    original = policy(min_down_payment_pct="12.5", full_payment_discount_pct=10, full_payment_deadline_days=5)
    dumped = json.loads(json.dumps(original.to_json()))
    assert (dumped["min_down_payment_pct"], dumped["hardship"]) == (12.5, None)
    assert NegotiationPolicy.model_validate(dumped) == original
    assert NegotiationPolicy.model_validate(DEFAULT_POLICY.to_json()) == DEFAULT_POLICY


@pytest.mark.parametrize(
    "fields",
    [
        {"surprise": 1},
        {"max_installments": 0},
        {"min_down_payment_pct": 101},
        {"min_down_payment_pct": "10.125"},
        {"full_payment_discount_pct": 100},
        {"min_installment_minor": -1},
        {"installment_interval": "weekly"},
        {"installment_interval": 0},
        {"offer_expiry_hours": 0},
        {"hardship": {"max_installments": 0}},
        {"hardship": {"surprise": 1}},
    ],
)
def test_invalid_policy_fields_are_refused(fields: dict[str, Any]):
    with pytest.raises(ValidationError):
        NegotiationPolicy.model_validate(fields)


def test_interval_is_monthly_or_a_number_of_days():
    assert policy(installment_interval=14).installment_interval == 14
    assert policy().installment_interval == "monthly"


def test_hardship_overrides_only_the_fields_it_names():
    relief = policy(max_installments=6, min_installment_minor=10_000, hardship={"max_installments": 18}).terms(True)
    assert (relief.max_installments, relief.min_installment_minor) == (18, 10_000)
    assert policy(max_installments=6).terms(hardship=True).max_installments == 6


def test_full_down_payment_with_several_installments_is_a_problem():
    [problem] = policy(min_down_payment_pct=100, max_installments=3).problems()
    assert "min_down_payment_pct" in problem
    assert policy(min_down_payment_pct=100, max_installments=1).problems() == []


def test_discount_and_deadline_must_come_together():
    assert "full_payment_deadline_days" in policy(full_payment_discount_pct=5).problems()[0]
    assert "full_payment_discount_pct" in policy(full_payment_deadline_days=5).problems()[0]


@pytest.mark.parametrize(
    ("base", "hardship", "field"),
    [
        ({"max_installments": 6}, {"max_installments": 3}, "max_installments"),
        ({"min_down_payment_pct": 10}, {"min_down_payment_pct": 20}, "min_down_payment_pct"),
        ({"min_installment_minor": 5_000}, {"min_installment_minor": 9_000}, "min_installment_minor"),
        ({"max_first_payment_delay_days": 7}, {"max_first_payment_delay_days": 2}, "max_first_payment_delay_days"),
    ],
)
def test_hardship_variant_stricter_than_normal_is_a_problem(base: dict[str, Any], hardship: dict[str, Any], field: str):
    assert policy(**base, hardship=hardship).problems() == [f"hardship.{field} is stricter than the normal policy's"]


def test_inconsistency_inside_the_hardship_variant_is_named_as_such():
    problems = policy(hardship={"full_payment_discount_pct": 5}).problems()
    assert problems == ["hardship: full_payment_discount_pct is set but full_payment_deadline_days is not"]


# --- propose() ---------------------------------------------------------------------------------------------


def test_menu_pays_in_full_with_discount_then_shortest_and_longest_split():
    rules = policy(
        max_installments=6, min_down_payment_pct=20, full_payment_discount_pct="7.5", full_payment_deadline_days=5
    )
    full, shortest, longest = propose(rules, clp(200_000), TODAY, NOW)
    assert (full.kind, full.discount, amounts(full), full.first_date) == (
        OfferKind.FULL_DISCOUNT,
        clp(15_000),
        [185_000],
        TODAY + timedelta(days=5),
    )
    assert (shortest.down_payment, amounts(shortest)) == (clp(40_000), [160_000])
    assert (longest.down_payment, amounts(longest)) == (clp(40_000), [26_667, 26_667, 26_667, 26_667, 26_666, 26_666])
    assert longest.first_date == TODAY and due_dates(longest)[0] == date(2026, 4, 10)
    assert all(offer.expires_at == NOW + timedelta(hours=48) for offer in (full, shortest, longest))


def test_menu_without_discount_or_down_payment_offers_a_plain_single_payment_today():
    full, shortest, longest = propose(policy(max_installments=3), clp(90_000), TODAY, NOW)
    assert (full.kind, full.discount, amounts(full), due_dates(full)) == (
        OfferKind.INSTALLMENTS,
        clp(0),
        [90_000],
        [TODAY],
    )
    assert amounts(shortest) == [45_000, 45_000]
    assert amounts(longest) == [30_000] * 3
    assert due_dates(longest) == [TODAY, date(2026, 4, 10), date(2026, 5, 10)]


def test_menu_is_deduplicated_when_the_policy_leaves_few_choices():
    assert [amounts(offer) for offer in propose(policy(max_installments=2), clp(1_000), TODAY, NOW)] == [
        [1_000],
        [500, 500],
    ]
    assert len(propose(policy(min_down_payment_pct=100, max_installments=1), clp(1_000), TODAY, NOW)) == 1


def test_minimum_installment_caps_the_number_of_installments():
    longest = propose(policy(max_installments=12, min_installment_minor=25_000), clp(100_000), TODAY, NOW)[-1]
    assert amounts(longest) == [25_000] * 4


def test_balance_below_the_minimum_installment_is_paid_in_one_go():
    [only] = propose(policy(min_installment_minor=50_000), clp(30_000), TODAY, NOW)
    assert (amounts(only), only.down_payment) == ([30_000], clp(0))


def test_nothing_owed_means_no_offers():
    assert propose(DEFAULT_POLICY, clp(0), TODAY, NOW) == []


def test_usd_cents_are_spread_over_the_first_installments_and_sum_exactly():
    longest = propose(policy(max_installments=3), usd(100_000), TODAY, NOW)[-1]
    assert amounts(longest) == [33_334, 33_333, 33_333]
    assert [term.amount.amount for term in longest.installments] == [
        Decimal("333.34"),
        Decimal("333.33"),
        Decimal("333.33"),
    ]


def test_clp_down_payment_rounds_up_and_discount_rounds_down_to_whole_pesos():
    rules = policy(min_down_payment_pct="33.33", full_payment_discount_pct="2.5", full_payment_deadline_days=3)
    full, shortest, *_ = propose(rules, clp(10_001), TODAY, NOW)
    assert full.discount == clp(250)  # 250.025 pesos of discount rounds down
    assert shortest.down_payment == clp(3_334)  # 3333.3333 pesos of down payment rounds up
    assert check(rules, clp(10_001), shortest, TODAY, NOW) == []


def test_hardship_gets_more_installments_and_no_down_payment():
    rules = policy(
        max_installments=6, min_down_payment_pct=20, hardship={"max_installments": 12, "min_down_payment_pct": 0}
    )
    normal = propose(rules, clp(120_000), TODAY, NOW, hardship=False)[-1]
    relief = propose(rules, clp(120_000), TODAY, NOW, hardship=True)[-1]
    assert (normal.down_payment, len(normal.installments)) == (clp(24_000), 6)
    assert (relief.down_payment, amounts(relief)) == (clp(0), [10_000] * 12)
    assert reasons(check(rules, clp(120_000), relief, TODAY, NOW, hardship=False)) == {
        Reason.TOO_MANY_INSTALLMENTS,
        Reason.DOWN_PAYMENT_BELOW_MINIMUM,
    }
    assert check(rules, clp(120_000), relief, TODAY, NOW, hardship=True) == []


# --- calendar months ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2024, 1, 31), [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]),
        (date(2023, 1, 31), [date(2023, 1, 31), date(2023, 2, 28), date(2023, 3, 31), date(2023, 4, 30)]),
        (date(2025, 11, 30), [date(2025, 11, 30), date(2025, 12, 30), date(2026, 1, 30), date(2026, 2, 28)]),
    ],
)
def test_monthly_due_dates_keep_the_day_and_clamp_to_month_end(today: date, expected: list[date]):
    longest = propose(policy(max_installments=4), clp(40_000), today, NOW)[-1]
    assert due_dates(longest) == expected


def test_down_payment_is_due_first_and_installments_start_one_interval_later():
    longest = propose(policy(min_down_payment_pct=10, max_installments=2), clp(10_000), date(2024, 1, 31), NOW)[-1]
    assert (longest.first_date, due_dates(longest)) == (date(2024, 1, 31), [date(2024, 2, 29), date(2024, 3, 31)])


def test_interval_in_days():
    longest = propose(policy(max_installments=3, installment_interval=14), clp(30_000), TODAY, NOW)[-1]
    assert due_dates(longest) == [TODAY, TODAY + timedelta(days=14), TODAY + timedelta(days=28)]


# --- evaluate() --------------------------------------------------------------------------------------------


def test_twenty_thousand_a_month_on_two_hundred_thousand_with_six_at_most_becomes_six_installments():
    result = evaluate(
        policy(max_installments=6), clp(200_000), CounterOffer(installment_amount=clp(20_000)), TODAY, NOW
    )
    assert (result.reason, result.accepted) == (Reason.TOO_MANY_INSTALLMENTS, None)
    assert amounts(result.closest) == [33_334, 33_334, 33_333, 33_333, 33_333, 33_333]
    assert result.limits.max_installments == 6


def test_counter_within_policy_is_accepted_as_asked():
    counter = CounterOffer(installments=4, down_payment=clp(40_000), first_date=TODAY + timedelta(days=3))
    result = evaluate(policy(min_down_payment_pct=10), clp(200_000), counter, TODAY, NOW)
    assert result.reason is Reason.WITHIN_POLICY
    assert result.accepted is result.closest
    assert (result.accepted.down_payment, amounts(result.accepted)) == (clp(40_000), [40_000] * 4)
    assert result.accepted.first_date == TODAY + timedelta(days=3)


def test_affordable_amount_sets_the_number_of_installments_without_exceeding_it():
    result = evaluate(policy(), clp(210_000), CounterOffer(installment_amount=clp(50_000)), TODAY, NOW)
    assert result.reason is Reason.WITHIN_POLICY
    assert amounts(result.accepted) == [42_000] * 5


def test_too_many_installments_is_capped_at_the_maximum():
    result = evaluate(policy(max_installments=6), clp(120_000), CounterOffer(installments=12), TODAY, NOW)
    assert (result.reason, amounts(result.closest)) == (Reason.TOO_MANY_INSTALLMENTS, [20_000] * 6)


def test_installment_below_minimum_is_raised_to_the_minimum():
    rules = policy(max_installments=12, min_installment_minor=25_000)
    result = evaluate(rules, clp(100_000), CounterOffer(installment_amount=clp(10_000)), TODAY, NOW)
    assert (result.reason, amounts(result.closest)) == (Reason.INSTALLMENT_BELOW_MINIMUM, [25_000] * 4)
    assert result.limits.min_installment == clp(25_000)


def test_asked_count_that_would_split_below_the_minimum_gets_fewer_installments():
    rules = policy(max_installments=12, min_installment_minor=25_000)
    result = evaluate(rules, clp(100_000), CounterOffer(installments=10), TODAY, NOW)
    assert (result.reason, amounts(result.closest)) == (Reason.INSTALLMENT_BELOW_MINIMUM, [25_000] * 4)


def test_down_payment_that_leaves_less_than_one_minimum_installment_is_lowered():
    rules = policy(min_installment_minor=20_000)
    counter = CounterOffer(installments=1, down_payment=clp(190_000))
    result = evaluate(rules, clp(200_000), counter, TODAY, NOW)
    assert (result.reason, result.closest.down_payment, amounts(result.closest)) == (
        Reason.INSTALLMENT_BELOW_MINIMUM,
        clp(180_000),
        [20_000],
    )


def test_down_payment_below_minimum_is_raised_to_the_minimum():
    result = evaluate(policy(min_down_payment_pct=25), clp(100_000), CounterOffer(down_payment=clp(0)), TODAY, NOW)
    assert (result.reason, result.closest.down_payment) == (Reason.DOWN_PAYMENT_BELOW_MINIMUM, clp(25_000))
    assert result.limits.min_down_payment == clp(25_000)


def test_no_split_at_all_when_the_whole_balance_is_the_down_payment():
    rules = policy(min_down_payment_pct=100, max_installments=1)
    result = evaluate(rules, clp(100_000), CounterOffer(installments=3), TODAY, NOW)
    assert (result.reason, amounts(result.closest)) == (Reason.DOWN_PAYMENT_BELOW_MINIMUM, [100_000])
    later = TODAY + timedelta(days=2)
    only_a_date = evaluate(rules, clp(100_000), CounterOffer(first_date=later), TODAY, NOW)
    assert (only_a_date.reason, due_dates(only_a_date.accepted), amounts(only_a_date.accepted)) == (
        Reason.WITHIN_POLICY,
        [later],
        [100_000],
    )


def test_only_a_date_asks_for_the_longest_plan_starting_then():
    later = TODAY + timedelta(days=2)
    result = evaluate(policy(max_installments=3), clp(90_000), CounterOffer(first_date=later), TODAY, NOW)
    assert (result.reason, due_dates(result.accepted)[0], amounts(result.accepted)) == (
        Reason.WITHIN_POLICY,
        later,
        [30_000] * 3,
    )


def test_an_installment_covering_everything_is_payment_in_full():
    result = evaluate(
        policy(min_down_payment_pct=20), clp(200_000), CounterOffer(installment_amount=clp(300_000)), TODAY, NOW
    )
    assert (result.reason, result.accepted.down_payment, amounts(result.accepted)) == (
        Reason.WITHIN_POLICY,
        clp(0),
        [200_000],
    )
    one_short = evaluate(
        policy(), clp(200_000), CounterOffer(installments=1, installment_amount=clp(150_000)), TODAY, NOW
    )
    assert (one_short.reason, amounts(one_short.closest)) == (Reason.DOES_NOT_COVER_BALANCE, [200_000])


def test_first_date_too_late_or_in_the_past_is_moved_to_the_nearest_allowed_day():
    rules = policy(max_first_payment_delay_days=7)
    late = evaluate(rules, clp(60_000), CounterOffer(installments=3, first_date=TODAY + timedelta(days=20)), TODAY, NOW)
    past = evaluate(rules, clp(60_000), CounterOffer(installments=3, first_date=TODAY - timedelta(days=1)), TODAY, NOW)
    assert (late.reason, late.closest.first_date) == (Reason.FIRST_DATE_TOO_LATE, TODAY + timedelta(days=7))
    assert (past.reason, past.closest.first_date) == (Reason.FIRST_DATE_IN_PAST, TODAY)
    assert late.limits.latest_first_date == TODAY + timedelta(days=7)


def test_count_and_amount_that_do_not_cover_the_balance_keep_the_count():
    counter = CounterOffer(installments=6, installment_amount=clp(20_000))
    result = evaluate(policy(), clp(200_000), counter, TODAY, NOW)
    assert (result.reason, len(result.closest.installments)) == (Reason.DOES_NOT_COVER_BALANCE, 6)
    covered = evaluate(policy(), clp(100_000), counter, TODAY, NOW)
    assert covered.reason is Reason.WITHIN_POLICY and max(amounts(covered.accepted)) <= 20_000


def test_one_installment_without_down_payment_is_payment_in_full_and_earns_the_discount_in_time():
    rules = policy(full_payment_discount_pct=10, full_payment_deadline_days=5, max_first_payment_delay_days=10)
    in_time = evaluate(
        rules, clp(50_000), CounterOffer(installments=1, first_date=TODAY + timedelta(days=5)), TODAY, NOW
    )
    too_late = evaluate(
        rules, clp(50_000), CounterOffer(installments=1, first_date=TODAY + timedelta(days=6)), TODAY, NOW
    )
    assert (in_time.reason, in_time.accepted.kind, amounts(in_time.accepted)) == (
        Reason.WITHIN_POLICY,
        OfferKind.FULL_DISCOUNT,
        [45_000],
    )
    assert (too_late.reason, too_late.accepted.kind, amounts(too_late.accepted)) == (
        Reason.WITHIN_POLICY,
        OfferKind.INSTALLMENTS,
        [50_000],
    )
    assert in_time.limits.full_payment_deadline == TODAY + timedelta(days=5)


def test_wrong_currency_and_nothing_owed_give_no_plan():
    wrong = evaluate(policy(), clp(50_000), CounterOffer(installment_amount=usd(1_000)), TODAY, NOW)
    nothing = evaluate(policy(), clp(0), CounterOffer(installments=3), TODAY, NOW)
    assert (wrong.reason, wrong.closest, nothing.reason, nothing.closest) == (
        Reason.WRONG_CURRENCY,
        None,
        Reason.NOTHING_OWED,
        None,
    )


@pytest.mark.parametrize(
    "fields",
    [{}, {"installments": 0}, {"installment_amount": clp(0)}, {"down_payment": clp(-1)}],
)
def test_meaningless_counter_offers_are_refused(fields: dict[str, Any]):
    with pytest.raises(ValueError):
        CounterOffer(**fields)


def test_naive_clock_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        propose(DEFAULT_POLICY, clp(1_000), TODAY, NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        dataclasses.replace(propose(DEFAULT_POLICY, clp(1_000), TODAY, NOW)[0], expires_at=NOW.replace(tzinfo=None))


# --- check() -----------------------------------------------------------------------------------------------

RULES = policy(
    max_installments=4,
    min_down_payment_pct=10,
    min_installment_minor=10_000,
    full_payment_discount_pct=5,
    full_payment_deadline_days=3,
)
BALANCE = clp(100_000)


def menu() -> tuple[PlanOffer, PlanOffer]:
    full, *_, longest = propose(RULES, BALANCE, TODAY, NOW)
    return full, longest


def plan(down: int, values: list[int], first: date = TODAY, discount: int = 0) -> PlanOffer:
    """A hand-built offer on RULES' monthly schedule (day 10 never needs clamping)."""
    offset = 1 if down else 0
    terms = tuple(
        InstallmentTerm(seq, first.replace(month=first.month + seq - 1 + offset), clp(value))
        for seq, value in enumerate(values, start=1)
    )
    kind = OfferKind.FULL_DISCOUNT if discount else OfferKind.INSTALLMENTS
    return PlanOffer(kind, BALANCE, clp(discount), clp(down), first, terms, NOW + timedelta(hours=1))


def test_check_accepts_what_propose_offers_and_survives_a_json_round_trip():
    assert check(RULES, BALANCE, plan(10_000, [22_500] * 4), TODAY, NOW) == []
    for offer in propose(RULES, BALANCE, TODAY, NOW):
        assert PlanOffer.from_json(offer.to_json()) == offer
        assert check(RULES, BALANCE, PlanOffer.from_json(offer.to_json()), TODAY, NOW) == []


@pytest.mark.parametrize(
    ("offer", "expected"),
    [
        (plan(10_000, [22_501, 22_500, 22_500, 22_500]), {Reason.SUM_MISMATCH}),
        (plan(10_000, [45_000, 45_000, 0]), {Reason.INVALID_AMOUNT, Reason.INSTALLMENT_BELOW_MINIMUM}),
        (plan(10_000, [18_000] * 5), {Reason.TOO_MANY_INSTALLMENTS}),
        (plan(10_000, [40_000, 40_000, 5_000, 5_000]), {Reason.INSTALLMENT_BELOW_MINIMUM}),
        (plan(1_000, [24_750] * 4), {Reason.DOWN_PAYMENT_BELOW_MINIMUM}),
        (plan(10_000, [22_500] * 4, first=TODAY + timedelta(days=8)), {Reason.FIRST_DATE_TOO_LATE}),
        (plan(0, [94_000], discount=6_000), {Reason.DISCOUNT_NOT_ALLOWED}),
        (plan(0, [45_000, 50_000], discount=5_000), {Reason.SCHEDULE_MISMATCH}),
        (plan(0, [95_000], discount=5_000, first=TODAY + timedelta(days=4)), {Reason.FIRST_DATE_TOO_LATE}),
        (plan(0, [10_000, 90_000], discount=0), {Reason.DOWN_PAYMENT_BELOW_MINIMUM}),
    ],
)
def test_check_finds_each_rule_broken(offer: PlanOffer, expected: set[Reason]):
    assert reasons(check(RULES, BALANCE, offer, TODAY, NOW)) == expected


def test_check_finds_a_schedule_that_does_not_follow_the_interval_or_sequence():
    good = plan(10_000, [22_500] * 4)
    moved = dataclasses.replace(good.installments[1], due_date=good.installments[1].due_date + timedelta(days=1))
    renumbered = dataclasses.replace(good.installments[0], seq=7)
    for terms in ((good.installments[0], moved, *good.installments[2:]), (renumbered, *good.installments[1:])):
        offer = dataclasses.replace(good, installments=terms)
        assert reasons(check(RULES, BALANCE, offer, TODAY, NOW)) == {Reason.SCHEDULE_MISMATCH}


def test_check_notices_the_balance_changed_since_the_offer():
    _, longest = menu()
    assert reasons(check(RULES, clp(99_000), longest, TODAY, NOW)) == {Reason.BALANCE_CHANGED}


def test_check_refuses_a_discount_on_an_installment_plan_and_a_late_full_payment():
    full, _ = menu()
    discounted = dataclasses.replace(plan(10_000, [22_499] * 4, discount=4), kind=OfferKind.INSTALLMENTS)
    assert reasons(check(RULES, BALANCE, discounted, TODAY, NOW)) == {Reason.DISCOUNT_NOT_ALLOWED}
    assert reasons(check(RULES, BALANCE, full, TODAY - timedelta(days=1), NOW)) == {Reason.FIRST_DATE_TOO_LATE}


def test_check_refuses_past_first_date_expired_offer_wrong_currency_and_nothing_owed():
    _, longest = menu()
    assert reasons(check(RULES, BALANCE, longest, TODAY + timedelta(days=1), NOW)) == {Reason.FIRST_DATE_IN_PAST}
    assert reasons(check(RULES, BALANCE, longest, TODAY, NOW + timedelta(hours=48))) == {Reason.EXPIRED}
    assert reasons(check(RULES, usd(100_000), longest, TODAY, NOW)) == {Reason.WRONG_CURRENCY}
    assert reasons(check(RULES, clp(0), longest, TODAY, NOW)) == {Reason.NOTHING_OWED}


# --- properties --------------------------------------------------------------------------------------------

CURRENCIES = ("CLP", "USD", "MXN", "COP", "PEN", "ARS")
percent = st.integers(0, 10_000).map(lambda bp: Decimal(bp) / 100)


@st.composite
def consistent_policies(draw: st.DrawFn) -> NegotiationPolicy:
    down_pct = draw(percent)
    discount = draw(st.one_of(st.just(Decimal(0)), st.integers(1, 9_999).map(lambda bp: Decimal(bp) / 100)))
    delay = draw(st.integers(0, 60))
    base = {
        "max_installments": 1 if down_pct == 100 else draw(st.integers(1, 36)),
        "min_down_payment_pct": down_pct,
        "min_installment_minor": draw(st.one_of(st.just(0), st.integers(1, 10**8))),
        "installment_interval": draw(st.one_of(st.just("monthly"), st.integers(1, 60))),
        "max_first_payment_delay_days": delay,
        "full_payment_discount_pct": discount,
        "full_payment_deadline_days": draw(st.integers(0, 60)) if discount else None,
        "offer_expiry_hours": draw(st.integers(1, 168)),
    }
    hardship = None
    if draw(st.booleans()) and down_pct < 100:
        hardship = {
            "max_installments": base["max_installments"] + draw(st.integers(0, 24)),
            "min_down_payment_pct": draw(st.integers(0, int(down_pct * 100)).map(lambda bp: Decimal(bp) / 100)),
            "min_installment_minor": draw(st.integers(0, base["min_installment_minor"])),
            "max_first_payment_delay_days": delay + draw(st.integers(0, 30)),
        }
    built = NegotiationPolicy.model_validate({**base, "hardship": hardship})
    assert built.problems() == []
    return built


balances = st.builds(Money, st.integers(1, 10**10), st.sampled_from(CURRENCIES))
days = st.dates(date(2000, 1, 1), date(2099, 12, 31))


@st.composite
def counters(draw: st.DrawFn, currency: str, today: date) -> CounterOffer:
    def money(low: int) -> Money | None:
        return draw(st.one_of(st.none(), st.integers(low, 10**10).map(lambda minor: Money(minor, currency))))

    fields = {
        "installments": draw(st.one_of(st.none(), st.integers(1, 60))),
        "installment_amount": money(1),
        "down_payment": money(0),
        "first_date": draw(st.one_of(st.none(), st.integers(-10, 90).map(lambda n: today + timedelta(days=n)))),
    }
    if all(value is None for value in fields.values()):
        fields["installments"] = draw(st.integers(1, 60))
    return CounterOffer(**fields)


def assert_within_policy(terms: PolicyTerms, balance: Money, offer: PlanOffer, today: date, now: datetime) -> None:
    """The rules restated independently of the module: exact sums, counts, minimums and date windows."""
    owed = balance.minor
    paid = [offer.down_payment.minor, *amounts(offer)]
    assert offer.total == balance
    assert sum(paid) == owed - offer.discount.minor
    assert all(money.currency == balance.currency for money in (offer.discount, offer.down_payment))
    assert all(term.amount.currency == balance.currency and term.amount.minor > 0 for term in offer.installments)
    assert [term.seq for term in offer.installments] == list(range(1, len(offer.installments) + 1))
    schedule = [offer.first_date] * bool(offer.down_payment.minor) + due_dates(offer)
    assert schedule[0] == offer.first_date >= today
    assert all(earlier < later for earlier, later in itertools.pairwise(schedule))
    assert offer.expires_at == now + timedelta(hours=terms.offer_expiry_hours)
    if offer.kind is OfferKind.FULL_DISCOUNT:
        assert len(offer.installments) == 1 and offer.down_payment.minor == 0
        assert 0 < offer.discount.minor <= Fraction(owed) * Fraction(terms.full_payment_discount_pct) / 100
        assert offer.first_date <= today + timedelta(days=terms.full_payment_deadline_days)
        return
    assert offer.discount.minor == 0
    assert offer.first_date <= today + timedelta(days=terms.max_first_payment_delay_days)
    assert len(offer.installments) <= terms.max_installments
    if offer.down_payment.minor or len(offer.installments) > 1:
        # Only a single payment of everything may be below the minimum installment; everything else may not.
        assert min(amounts(offer)) >= terms.min_installment_minor
        assert offer.down_payment.minor >= Fraction(owed) * Fraction(terms.min_down_payment_pct) / 100


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=consistent_policies(), balance=balances, today=days, hardship=st.booleans())
def test_every_proposed_offer_is_within_policy(rules: NegotiationPolicy, balance: Money, today: date, hardship: bool):
    now = datetime.combine(today, datetime.min.time(), tzinfo=UTC) + timedelta(hours=13)
    offers = propose(rules, balance, today, now, hardship=hardship)
    assert offers and len(set(offers)) == len(offers)
    for offer in offers:
        assert check(rules, balance, offer, today, now, hardship=hardship) == []
        assert_within_policy(rules.terms(hardship), balance, offer, today, now)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rules=consistent_policies(), balance=balances, today=days, hardship=st.booleans())
def test_counter_offers_get_a_plan_within_policy_and_are_only_accepted_when_within_policy(
    data: st.DataObject, rules: NegotiationPolicy, balance: Money, today: date, hardship: bool
):
    now = datetime.combine(today, datetime.min.time(), tzinfo=UTC) + timedelta(hours=13)
    counter = data.draw(counters(balance.currency, today))
    result = evaluate(rules, balance, counter, today, now, hardship=hardship)
    event(f"reason: {result.reason}, accepted: {result.accepted is not None}")
    terms = rules.terms(hardship)
    assert result.closest is not None
    assert check(rules, balance, result.closest, today, now, hardship=hardship) == []
    assert_within_policy(terms, balance, result.closest, today, now)
    assert (result.accepted is not None) == (result.reason is Reason.WITHIN_POLICY)
    if result.accepted is None:
        return
    assert_counter_was_within_policy(terms, balance.minor, counter, today)
    assert_accepted_as_asked(result.accepted, counter, balance.minor)
    if counter.installment_amount is not None and (
        result.accepted.down_payment.minor or len(amounts(result.accepted)) > 1
    ):
        assert counter.installment_amount.minor >= terms.min_installment_minor


def assert_counter_was_within_policy(terms: PolicyTerms, owed: int, counter: CounterOffer, today: date) -> None:
    if counter.first_date is not None:
        assert today <= counter.first_date <= today + timedelta(days=terms.max_first_payment_delay_days)
    amount = counter.installment_amount
    if counter.down_payment is not None and counter.down_payment.minor >= owed:
        return  # everything up front
    one_payment = counter.installments == 1 or (counter.installments is None and amount and amount.minor >= owed)
    if counter.down_payment is None and one_payment:
        assert amount is None or amount.minor >= owed
        return  # everything in one payment
    assert counter.installments is None or counter.installments <= terms.max_installments
    if counter.down_payment is not None:
        assert counter.down_payment.minor >= Fraction(owed) * Fraction(terms.min_down_payment_pct) / 100


def assert_accepted_as_asked(plan: PlanOffer, counter: CounterOffer, owed: int) -> None:
    if counter.first_date is not None:
        assert plan.first_date == counter.first_date
    if counter.down_payment is not None and counter.down_payment.minor < owed:
        assert plan.down_payment == counter.down_payment
        assert counter.installments is None or len(plan.installments) == counter.installments
    if counter.down_payment is not None and counter.down_payment.minor >= owed:
        assert (plan.down_payment.minor, len(plan.installments)) == (0, 1)  # everything at once
    elif counter.installment_amount is not None:
        assert max(amounts(plan)) <= counter.installment_amount.minor


@settings(max_examples=200, deadline=None)
@given(rules=consistent_policies(), balance=balances, today=days, nudge=st.integers(1, 10**6))
def test_check_notices_any_change_to_an_amount(rules: NegotiationPolicy, balance: Money, today: date, nudge: int):
    now = datetime.combine(today, datetime.min.time(), tzinfo=UTC)
    for offer in propose(rules, balance, today, now):
        first = offer.installments[0]
        nudged = (dataclasses.replace(first, amount=Money(first.amount.minor + nudge, balance.currency)),)
        tampered = dataclasses.replace(offer, installments=nudged + offer.installments[1:])
        assert Reason.SUM_MISMATCH in reasons(check(rules, balance, tampered, today, now))
