"""A real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against the console served by
a real HTTP server on 127.0.0.1. Playwright never downloads a browser here: it is pointed at Debian's.

Screenshots of every scenario are saved under test-artifacts/screenshots/ (CI keeps them as artifacts).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, sync_playwright
from werkzeug.serving import BaseWSGIServer, make_server

from bot.config import load_settings
from bot.services import Services, bootstrap
from bot.store import Database
from tests.admin import console_app
from tests.conftest import TEST_API_TOKEN, TEST_SECRET, FixedClock

CHROMIUM = os.environ.get("COBRABOT_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def _chromium_or_skip() -> str:
    if shutil.which(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium package")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")


class LiveServer:
    """The console app on a free port of 127.0.0.1, in a thread, for the length of one test."""

    def __init__(self, app: Flask) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def live_services(database_url: str, db: Database, clock: FixedClock) -> Services:
    # http public URL: the session cookie must not be Secure, or the browser would not send it back over http.
    settings = load_settings(
        database_url=database_url, secret_key=TEST_SECRET, api_token=TEST_API_TOKEN, public_url="http://127.0.0.1"
    )
    return bootstrap(settings, database=db, clock=clock)


@pytest.fixture
def live_server(live_services: Services) -> Iterator[LiveServer]:
    with LiveServer(console_app(live_services)) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = _chromium_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def screenshot(tab: Page, name: str) -> None:
    """A named screenshot in the middle of a scenario."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
