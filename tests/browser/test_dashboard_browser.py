"""A manager in a real browser: the dashboard draws its SVG charts with bars, and the period filter changes them."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from bot.store import Database
from tests.admin import add_agent
from tests.bot.test_reports import Portfolio, portfolio  # noqa: F401 - the hand-checked portfolio
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_agent_day import sign_in


def test_manager_sees_the_charts_and_changes_the_period(
    page: Page,
    live_server: LiveServer,
    db: Database,
    portfolio: Portfolio,  # noqa: F811
) -> None:
    add_agent(db, "marta@cobrabot.example", role="manager")
    sign_in(page, live_server, "marta@cobrabot.example")
    page.get_by_role("link", name="Dashboard").click()

    # Default: the last 30 days up to today (the clock says 2026-11-25) in the creditors' zone.
    expect(page.locator("#period")).to_contain_text("2026-10-27 – 2026-11-26 (America/Santiago)")
    aging = page.locator("#chart-aging-CLP svg[role=img]")
    expect(aging).to_be_visible()
    expect(aging.locator("g.bar rect")).to_have_count(5)
    # As of Nov 25: 0-30 days holds 10000, 31-60 nothing, 61-90 the largest (11000).
    widths = [box["width"] for box in (bar.bounding_box() for bar in aging.locator("g.bar rect").all()) if box]
    assert widths[3] > widths[1] > 0 and widths[2] == 0
    expect(page.locator("#chart-channels svg g.bar")).to_have_count(4)  # sms and email, delivery and response
    expect(page.locator(".tile").first).to_contain_text("CLP30,699")  # 10000 + 3700 + 9999 (Oct 31) + 7000 (Luz); en-US
    screenshot(page, "dashboard_last_30_days")

    page.get_by_label("Creditor").select_option(label="Aguas")
    page.get_by_label("Period").select_option("this_month")
    page.get_by_role("button", name="Apply").click()

    expect(page).to_have_url(re.compile(r"preset=this_month"))
    expect(page.locator("#period")).to_contain_text("2026-11-01 – 2026-12-01")
    weekly = page.locator("#chart-weekly-CLP svg[role=img]")
    expect(weekly.locator("title")).to_have_text("Collected per week (CLP)")
    expect(weekly.locator("g.bar")).to_have_count(6)  # ISO weeks 44 to 49
    expect(weekly.locator("g.bar").nth(1)).to_contain_text("$10.000")
    expect(page.locator(".tile").first).to_contain_text("$13.700")
    screenshot(page, "dashboard_this_month")
