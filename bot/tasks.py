"""Celery over Redis: each job in bot.jobs becomes a task that any number of workers can run."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from bot.config import Settings
from bot.domain import utcnow
from bot.jobs import JOBS, run_job
from bot.store import Database


def make_celery(settings: Settings, database: Database | None = None) -> Celery:
    """A Celery app bound to COBRABOT_REDIS_URL with one task per job (named cobrabot.<job>)."""
    if not settings.redis_url:
        raise ValueError("Celery needs COBRABOT_REDIS_URL")
    app = Celery("cobrabot", broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,  # a worker killed mid-job leaves the task for another worker
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    db = database or Database(settings.database_url)
    for name in JOBS:
        app.task(name=f"cobrabot.{name}")(_bind(name, db))
    return app


def _bind(name: str, database: Database) -> Callable[[], dict[str, int]]:
    def task() -> dict[str, int]:
        return run_job(name, database, utcnow)

    task.__name__ = name
    return task
