"""A manager in a real browser: the flow diagram is drawn, typing a mistake shows its line, the simulator talks."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect
from sqlalchemy import select

from bot.models import FlowVersion
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


def test_a_broken_draft_cannot_be_published_and_the_fix_goes_live(
    page: Page, live_server: LiveServer, db: Database
) -> None:
    add_agent(db, "marta@cobrabot.example", role="manager")
    sign_in(page, live_server, "marta@cobrabot.example")
    page.goto(f"{live_server.url}/admin/flows/collections")
    source = page.locator("#flow-source")
    shipped = source.input_value()

    source.fill(shipped.replace("start: verify", "start: nowhere"))
    expect(page.locator("#flow-problems")).to_contain_text("unknown node 'nowhere'")
    broken = save_draft(page)
    page.locator("tr", has_text=f"v{broken}").get_by_role("button", name="Publish").click()
    expect(page.locator(".flash.error")).to_contain_text("cannot be published")
    screenshot(page, "flow_publish_refused")

    page.locator("#flow-source").fill(shipped + "\n# reviewed by Marta\n")
    expect(page.locator("#flow-problems")).to_contain_text("No problems.")
    fixed = save_draft(page)
    page.locator("tr", has_text=f"v{fixed}").get_by_role("button", name="Publish").click()
    expect(page.locator("h1")).to_contain_text(f"in force: v{fixed}")
    screenshot(page, "flow_published")

    with db.session() as session:
        statuses = dict(session.execute(select(FlowVersion.version, FlowVersion.status)).tuples().all())
    assert statuses == {broken: "draft", fixed: "published"}


def save_draft(page: Page) -> int:
    page.get_by_role("button", name="Save as new draft").click()
    flash = page.locator(".flash", has_text="saved")
    expect(flash).to_be_visible()
    return int(re.search(r"Draft v(\d+) saved", flash.inner_text()).group(1))  # type: ignore[union-attr]
