"""SIGKILL a real `cobrabot inbox-worker` while it drains queued webhooks: a second worker finishes the inbox,
every message is one turn, and no debtor gets a reply twice (the killed batch's committed turns are deduplicated
on the message's provider id, its uncommitted ones run again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.domain import utcnow
from bot.models import Conversation, InboxItem, Message, Outbox
from tests.conftest import TEST_PUBLIC_URL, TEST_SECRET
from tests.faults.helpers import count, message_sid, post_sms, sms_form, twilio_app, twilio_services

DEBTORS = 12
BODIES = ("hola", "cuánto debo", "quiero pagar", "puedo pagar el viernes", "gracias")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_an_inbox_worker_killed_mid_batch_loses_nothing_and_answers_nothing_twice(
    db, standin, make_creditor, make_debtor
):
    services = twilio_services(db, utcnow, standin.url, inbound_queue=True)  # the worker runs on the real clock
    app = twilio_app(services)
    creditor = make_creditor()
    phones = [
        make_debtor(
            creditor=creditor,
            external_ref=f"Q-{index}",
            phone=f"+56 9 6123 50{index:02d}",
            invoices=[{"number": f"Q-{index}", "amount": "45990", "due_date": "2026-12-05"}],
        ).phone
        for index in range(DEBTORS)
    ]
    sids = []
    for round_, body in enumerate(BODIES):
        for index, phone in enumerate(phones):
            sids.append(message_sid(round_ * 100 + index))
            assert post_sms(app, sms_form(phone, body, sids[-1])).status_code == 200

    doomed = subprocess.Popen(
        [sys.executable, "-c", "from bot.cli import main; main()", "inbox-worker", "--threads", "2", "--batch", "4"],
        cwd=ROOT,
        env=os.environ | {"COBRABOT_DATABASE_URL": db.url, "COBRABOT_SECRET_KEY": TEST_SECRET,
                          "COBRABOT_PUBLIC_URL": TEST_PUBLIC_URL, "COBRABOT_INBOUND_QUEUE": "true"},
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_until(lambda: count(db, Message, Message.direction == "in") >= DEBTORS // 2, doomed)
        os.kill(doomed.pid, signal.SIGKILL)  # mid-drain: some turns committed, their inbox rows not yet deleted
        assert doomed.wait(10) == -signal.SIGKILL
    finally:
        if doomed.poll() is None:
            doomed.kill()
    assert 0 < count(db, InboxItem) < len(sids), "the kill should have landed mid-drain"

    survivor = services.inbox_worker(batch_size=4, threads=2)
    while survivor.run_once().claimed:
        pass
    survivor.close()

    assert count(db, InboxItem) == 0
    with db.session() as session:
        stored = session.scalars(select(Message.provider_message_id).where(Message.direction == "in")).all()
        replies_per_debtor = set(
            session.scalars(select(func.count()).where(Message.direction == "out").group_by(Message.debtor_id)).all()
        )
        nodes = set(session.execute(select(Conversation.node, Conversation.mode)).all())
    assert sorted(stored) == sorted(sids)  # every message one turn: none lost, none twice
    assert len(replies_per_debtor) == 1  # identical debtors, identical messages: the same number of replies
    assert len(nodes) == 1  # ... and the same place in the flow
    assert count(db, Outbox) == count(db, Message, Message.direction == "out")


def _wait_until(condition, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the inbox worker exited early"
        assert time.monotonic() < deadline, "the inbox worker made no progress"
        time.sleep(0.01)
