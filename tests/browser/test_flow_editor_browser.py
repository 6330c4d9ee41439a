"""A manager in a real browser: the flow diagram is drawn, typing a mistake shows its line, the simulator talks."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from bot.store import Database
from flows.loader import default_flow
from tests.admin import add_agent
from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_agent_day import sign_in


def test_manager_edits_a_flow_sees_problems_diagram_and_simulates(
    page: Page, live_server: LiveServer, db: Database
) -> None:
    add_agent(db, "marta@cobrabot.example", role="manager")
    sign_in(page, live_server, "marta@cobrabot.example")
    page.get_by_role("link", name="Flows").click()
    page.get_by_role("link", name="collections").click()

    expect(page.locator("#flow-diagram svg g.node")).to_have_count(len(default_flow("collections").nodes))
    expect(page.locator("#flow-problems")).to_contain_text("No problems.")

    source = page.locator("#flow-source")
    source.fill(source.input_value().replace("start: verify", "start: nowhere"))
    expect(page.locator("#flow-problems")).to_contain_text("line 5: unknown node 'nowhere'")

    page.get_by_label("Message").fill("hola")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#sim-thread .msg.out").first).to_contain_text("últimos 4 dígitos")
    screenshot(page, "flow_editor")
