"""SIGKILL a real dispatcher process while the provider holds its request: after the lease expires a second
dispatcher sends everything; the in-flight message is the only one the provider sees twice (the documented
window, docs/reliability.md), and its first send's status callback is detected as unknown."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

from bot.dispatch import Dispatcher
from bot.models import Message, Outbox
from tests.faults.helpers import SID, post_sms, signature, sms_form, twilio_app, twilio_services

DEBTORS = 3
LEASE_SECONDS = 60
ROOT = Path(__file__).resolve().parents[2]
# The dispatcher alone (no web app, no NLU), on a clock the test chooses: lease once, send, exit.
DISPATCHER = """
import sys
from datetime import datetime
from bot.config import load_settings
from bot.dispatch import Dispatcher
from bot.store import Database
from channels import build_registry

settings = load_settings()
now = datetime.fromisoformat(sys.argv[1])
dispatcher = Dispatcher(Database(settings.database_url), build_registry(settings), lambda: now,
                        rates={}, lease_seconds=float(sys.argv[2]), worker_id="doomed")
dispatcher.run_once()
"""


class HoldingTwilio:
    """A Twilio Messages API stand-in that holds the first request open until released; every request gets a
    fresh provider id."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        twilio = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with twilio._lock:
                    twilio.bodies.append(parse_qs(body)["Body"][0])
                    index = len(twilio.bodies)
                if index == 1:
                    twilio.first_arrived.set()
                    twilio.release.wait(30)
                payload = json.dumps({"sid": f"SMd{index:031d}", "status": "queued", "account_sid": SID}).encode()
                try:
                    self.send_response(201)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the dispatcher died with the connection open

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


@pytest.fixture
def holding_twilio() -> Iterator[HoldingTwilio]:
    server = HoldingTwilio()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_dispatcher_killed_mid_send_loses_nothing_and_duplicates_at_most_the_in_flight_message(
    db, clock, make_creditor, make_debtor, holding_twilio, caplog
):
    services = twilio_services(db, clock, holding_twilio.url)
    app = twilio_app(services)
    creditor = make_creditor()
    for index in range(DEBTORS):
        debtor = make_debtor(
            creditor=creditor,
            external_ref=f"K-{index}",
            phone=f"+56 9 6123 40{index:02d}",
            invoices=[{"number": f"K-{index}", "amount": "45990", "due_date": "2026-12-05"}],
        )
        assert post_sms(app, sms_form(debtor.phone, "hola", f"SMin{index:030d}")).status_code == 200
    with db.session() as session:
        queued = session.scalars(select(Outbox.id)).all()
    assert len(queued) == DEBTORS

    doomed = subprocess.Popen(
        [sys.executable, "-c", DISPATCHER, clock().isoformat(), str(LEASE_SECONDS)],
        cwd=ROOT,
        env=_environment(db.url, holding_twilio.url),
    )
    try:
        assert holding_twilio.first_arrived.wait(60), "the dispatcher never reached the provider"
        os.kill(doomed.pid, signal.SIGKILL)  # mid-send: the provider has the request, we have no answer
        assert doomed.wait(10) == -signal.SIGKILL
    finally:
        if doomed.poll() is None:
            doomed.kill()
    holding_twilio.release.set()
    with db.session() as session:
        assert set(session.scalars(select(Outbox.status))) == {"leased"}  # the dead worker's lease remains

    survivor = Dispatcher(services.database, services.registry, clock, rates={}, lease_seconds=LEASE_SECONDS)
    assert survivor.run_once().sent == 0  # the lease still holds: nothing is sent twice before it expires
    clock.advance(seconds=LEASE_SECONDS + 1)
    assert survivor.run_once().sent == DEBTORS

    with db.session() as session:
        rows = session.scalars(select(Outbox)).all()
        recorded = session.scalars(select(Message.provider_message_id).where(Message.direction == "out")).all()
    assert [row.status for row in rows] == ["sent"] * DEBTORS
    assert len(set(recorded)) == DEBTORS  # each message recorded as sent once, with the id of its last send
    assert len(holding_twilio.bodies) == DEBTORS + 1  # the in-flight message reached the provider twice
    in_flight_first_id = "SMd" + f"{1:031d}"
    assert in_flight_first_id not in recorded

    # Detection: the provider's status callback for the unrecorded first send names an id we do not know.
    callback = {
        "MessageSid": in_flight_first_id,
        "MessageStatus": "delivered",
        "AccountSid": SID,
        "From": "+15005550006",
        "To": "+56961234000",
    }
    with caplog.at_level(logging.WARNING, logger="bot.dispatch"):
        response = app.test_client().post(
            "/webhooks/twilio/status",
            data=callback,
            headers={"X-Twilio-Signature": signature("/webhooks/twilio/status", callback)},
        )
    assert response.status_code == 200
    assert any(
        in_flight_first_id in record.getMessage() and "unknown" in record.getMessage() for record in caplog.records
    )


def _environment(database_url: str, twilio_url: str) -> dict[str, str]:
    return os.environ | {
        "COBRABOT_DATABASE_URL": database_url,
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": "unused-by-sending",
        "COBRABOT_TWILIO_SMS_FROM": "+15005550006",
        "COBRABOT_TWILIO_API_URL": twilio_url,
        "COBRABOT_REDIS_URL": "",
        "PYTHONPATH": str(ROOT),
    }
