"""The Celery path end to end: a real `cobrabot worker` process on the test Redis (a private queue per run)
and the test's database; the planning fan-out task enqueued here ends with reminders planned over there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.config import load_settings
from bot.models import Creditor, Debtor, ScheduledReminder
from bot.services import bootstrap
from bot.store import Database
from bot.tasks import make_celery
from tests.conftest import TEST_API_TOKEN, TEST_SECRET

pytestmark = pytest.mark.slow
COBRABOT = Path(sys.executable).with_name("cobrabot")
WAIT_SECONDS = 90


@pytest.fixture
def queue() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def worker(database_url: str, redis_url: str, queue: str, db: Database, tmp_path: Path) -> Iterator[Path]:
    """`cobrabot worker` reading `queue`, pointed at the same database as the test; its log file is yielded."""
    log = tmp_path / "worker.log"
    env = os.environ | {
        "COBRABOT_DATABASE_URL": database_url,
        "COBRABOT_REDIS_URL": redis_url,
        "COBRABOT_SECRET_KEY": TEST_SECRET,
        "COBRABOT_API_TOKEN": TEST_API_TOKEN,
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(COBRABOT), "worker", "--concurrency", "1", "--queue", queue],
            env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield log
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the worker and the children it forked, nothing else
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_the_planning_fan_out_runs_on_a_real_worker_and_plans_the_creditors_reminders(
    worker: Path, settings, db: Database, redis_url: str, queue: str,
    make_creditor: Callable[..., Creditor], make_debtor: Callable[..., Debtor],
):  # fmt: skip
    creditor = make_creditor()
    # The worker runs on the real clock: the debts fell due days ago, so a cadence step is due now.
    overdue = datetime.now(UTC).date() - timedelta(days=5)
    debtors = [
        make_debtor(creditor, external_ref=f"W-{n}", phone=f"+56 9 6123 45{n:02d}",
                    invoices=[{"number": f"W-{n}", "amount": "45990", "due_date": overdue}])
        for n in range(3)
    ]  # fmt: skip
    app = make_celery(
        bootstrap(load_settings(**(settings.model_dump() | {"redis_url": redis_url})), database=db), queue
    )
    app.send_task("cobrabot.plan_reminders")

    planned = _wait_for_reminders(db, {debtor.id for debtor in debtors}, worker)
    assert {row.debtor_id for row in planned} == {debtor.id for debtor in debtors}
    assert all(row.status == "queued" and row.outbox_id is not None for row in planned)
    # Planned by the per-creditor task that the fan-out enqueued, not by the fan-out task itself.
    assert "cobrabot.plan_creditor[" in _wait_for_line(worker, "succeeded")


def _wait_for_reminders(db: Database, debtor_ids: set[int], log: Path) -> list[ScheduledReminder]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        with db.session() as session:
            rows = list(session.scalars(select(ScheduledReminder).where(ScheduledReminder.debtor_id.in_(debtor_ids))))
        if {row.debtor_id for row in rows} == debtor_ids:
            return rows
        time.sleep(0.25)  # polling the database the worker writes to, not waiting in place of a signal
    pytest.fail(f"no reminders after {WAIT_SECONDS} s; worker log:\n{log.read_text(errors='replace')[-3000:]}")


def _wait_for_line(log: Path, word: str) -> str:
    """The worker's log once a line with `word` about a plan_creditor task appears (its logging flushes lines)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if any("cobrabot.plan_creditor[" in line and word in line for line in text.splitlines()):
            return text
        time.sleep(0.25)
    pytest.fail(f"the worker never logged a plan_creditor task {word}:\n{log.read_text(errors='replace')[-3000:]}")
