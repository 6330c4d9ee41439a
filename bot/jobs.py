"""Background jobs: the same functions run in-process (embedded) or as Celery tasks (with Redis)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.domain import Clock
from bot.promises import remind_promises, resolve_promises
from bot.store import Database

logger = logging.getLogger(__name__)


def promise_maintenance(database: Database, clock: Clock) -> dict[str, int]:
    """Remind promises due tomorrow, settle kept and broken ones; one transaction, safe to repeat."""
    now = clock()
    with database.unit_of_work() as uow:
        reminded = remind_promises(uow.session, now)
        resolved = resolve_promises(uow.session, now)
        uow.commit()
    counts = {"reminded": reminded.reminded, "kept": resolved.kept, "broken": resolved.broken}
    logger.info("promise maintenance: %s", counts)
    return counts


# name -> (function, interval in seconds). The scheduler fires each; the worker registers each as a task.
JOBS: dict[str, tuple[Callable[[Database, Clock], dict[str, int]], int]] = {
    "promise_maintenance": (promise_maintenance, 15 * 60),
}


def run_job(name: str, database: Database, clock: Clock) -> dict[str, int]:
    job, _interval = JOBS[name]
    return job(database, clock)
