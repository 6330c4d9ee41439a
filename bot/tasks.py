"""Celery over Redis: each job in bot.jobs becomes a task that any number of workers can run."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from bot.jobs import JOBS, run_job
from bot.services import Services


def make_celery(services: Services) -> Celery:
    """A Celery app bound to COBRABOT_REDIS_URL with one task per job (named cobrabot.<job>)."""
    if not services.settings.redis_url:
        raise ValueError("Celery needs COBRABOT_REDIS_URL")
    app = Celery("cobrabot", broker=services.settings.redis_url)
    app.conf.update(
        task_acks_late=True,  # a worker killed mid-job leaves the task for another worker
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    for name in JOBS:
        app.task(name=f"cobrabot.{name}")(_bind(name, services))
    return app


def _bind(name: str, services: Services) -> Callable[[], dict[str, int]]:
    def task() -> dict[str, int]:
        return run_job(name, services)

    task.__name__ = name
    return task
