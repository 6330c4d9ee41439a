"""An agent's day in a real browser: sign in, take a dispute from the inbox, reply, resolve."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect
from sqlalchemy import select

from bot.models import Conversation, Debtor, Message, Outbox
from bot.store import Database
from tests.admin import PASSWORD, add_agent, handed_off
from tests.browser.conftest import LiveServer, screenshot
from tests.conftest import FixedClock


def sign_in(page: Page, server: LiveServer, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{server.url}/admin/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_wrong_password_is_refused_and_the_right_one_signs_in(
    page: Page, live_server: LiveServer, db: Database
) -> None:
    add_agent(db, "ana@cobrabot.example")
    sign_in(page, live_server, "ana@cobrabot.example", "not the password")
    expect(page.locator(".flash")).to_be_visible()
    expect(page).to_have_url(f"{live_server.url}/admin/login")

    sign_in(page, live_server, "ana@cobrabot.example")
    expect(page).to_have_url(f"{live_server.url}/admin/inbox")


def test_agent_takes_a_dispute_replies_and_resolves(
    page: Page, live_server: LiveServer, db: Database, clock: FixedClock, make_debtor: Callable[..., Debtor]
) -> None:
    add_agent(db, "ana@cobrabot.example")
    debtor = make_debtor()
    conversation_id = handed_off(db, debtor, clock(), waited_minutes=45)
    with db.session() as session:
        session.get_one(Conversation, conversation_id).handoff_reason = "dispute"
        session.commit()

    sign_in(page, live_server, "ana@cobrabot.example")
    row = page.locator("tr", has_text=debtor.name)
    expect(row).to_contain_text("dispute")
    screenshot(page, "agent_inbox")

    row.get_by_role("link").first.click()
    expect(page.locator("#thread")).to_contain_text("quiero hablar con una persona")
    page.get_by_role("button", name="Assign to me").click()
    expect(page.locator(".meta")).to_contain_text("Assigned to: me")

    page.locator("#reply-text").fill("Hola Ana, revisamos su reclamo y le respondemos hoy.")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#thread")).to_contain_text("revisamos su reclamo")
    screenshot(page, "agent_replied")

    page.get_by_role("button", name="Resolve").click()
    expect(page.locator("h1")).to_contain_text("closed")

    with db.session() as session:
        conversation = session.get_one(Conversation, conversation_id)
        queued = session.scalars(select(Outbox).join(Message).where(Message.conversation_id == conversation_id)).all()
        assert conversation.mode == "closed"
        assert [row.initiated_by for row in queued] == ["agent"]
        assert queued[0].channel == "sms"
