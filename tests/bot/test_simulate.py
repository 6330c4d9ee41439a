"""The cadence simulation: zero violations with the default cadences, reproducible, opt-outs honoured."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner

from bot.cli_simulate import simulate_command
from bot.compliance import RuleBook
from bot.simulate import Behaviour, SimulationConfig, SimulationResult, cap_violations, max_in_window, simulate

SMALL = SimulationConfig(days=60, debtors=30, seed=1)


@pytest.fixture(scope="module")
def small_run() -> SimulationResult:
    return simulate(SMALL)


def test_default_cadences_break_no_rule(small_run: SimulationResult) -> None:
    assert small_run.messages > 0
    assert small_run.quiet_hour_violations == 0
    assert small_run.cap_violations == 0
    # Chile: two contacts per seven local days, so a rolling 7 x 24 h window holds at most three.
    assert 1 <= small_run.max_contacts_7_days <= 3
    assert small_run.messages_per_debtor_max >= small_run.messages_per_debtor_p95 >= 1


def test_same_seed_same_figures(small_run: SimulationResult) -> None:
    assert simulate(SMALL).figures() == small_run.figures()


def test_recovery_curve_is_non_decreasing_and_bounded(small_run: SimulationResult) -> None:
    shares = list(small_run.recovery.values())
    assert list(small_run.recovery) == [30, 60]
    assert shares == sorted(shares)
    assert 0 < shares[-1] <= 1


def test_opted_out_debtors_get_nothing_after_opting_out() -> None:
    everyone_opts_out = Behaviour(pay_full=0, pay_partial=0, promise=0, opt_out=1, dispute=0, never_pays=0)
    result = simulate(SimulationConfig(days=45, debtors=10, seed=3, behaviour=everyone_opts_out))
    assert set(result.outcomes) == {"opt_out"}
    # Each debtor reacts to the first message they receive (at most 72 h later) and is never contacted again.
    first: dict[int, datetime] = {}
    for send in sorted(result.sends, key=lambda s: s.at):
        first.setdefault(send.debtor_id, send.at)
        assert send.at <= first[send.debtor_id] + timedelta(hours=72)
    assert max(result.messages_by_debtor.values()) <= 2


def test_cap_violations_counts_sends_over_the_caps() -> None:
    chile = RuleBook()("CL", {})  # daily 1, weekly 2
    monday = date(2026, 3, 2)
    assert cap_violations(chile, [monday, monday + timedelta(days=3)]) == 0
    assert cap_violations(chile, [monday, monday]) == 1
    assert cap_violations(chile, [monday, monday + timedelta(days=2), monday + timedelta(days=4)]) == 1
    assert cap_violations(chile, [monday, monday + timedelta(days=3), monday + timedelta(days=7)]) == 0


def test_max_in_window_is_half_open() -> None:
    start = datetime(2026, 3, 2, 12, tzinfo=UTC)
    times = [start, start + timedelta(days=3), start + timedelta(days=7)]
    assert max_in_window(times, timedelta(days=7)) == 2  # exactly seven days later is the next window
    assert max_in_window(times, timedelta(days=7, seconds=1)) == 3


def test_cli_prints_the_figures() -> None:
    result = CliRunner().invoke(simulate_command, ["--days", "30", "--debtors", "10", "--seed", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["quiet_hour_violations"] == 0
    assert figures["cap_violations"] == 0
    assert figures["debtors"] == 10
    assert set(figures["recovery"]) == {"30"}


def test_cli_text_report_for_another_country() -> None:
    result = CliRunner().invoke(simulate_command, ["--days", "20", "--debtors", "5", "--creditor-country", "us"])
    assert result.exit_code == 0, result.output
    assert "quiet-hour violations: 0" in result.output
    assert "cap violations: 0" in result.output
    assert "messages per debtor: mean" in result.output
