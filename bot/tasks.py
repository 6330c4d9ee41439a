"""Celery over Redis: each job in bot.jobs becomes a task that any number of workers can run.

Tasks are registered with shared=False: Celery's default "shared" tasks attach to every app created later in
the process, so a second app (a test, an embedded run) would silently call the first app's services.

Planning fans out: the `cobrabot.plan_reminders` task only enqueues one `cobrabot.plan_creditor` task per
creditor, so several workers plan different creditors at once (each keeps its own transaction).
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from bot.jobs import JOBS, creditor_ids, plan_creditor_reminders, run_job
from bot.services import Services

FAN_OUT = "plan_reminders"  # this job becomes one task per creditor
PLAN_CREDITOR = "cobrabot.plan_creditor"


def make_celery(services: Services, queue: str | None = None) -> Celery:
    """A Celery app bound to COBRABOT_REDIS_URL with one task per job (named cobrabot.<job>).

    `queue` names the Redis queue tasks go to and workers read (default "celery"); tests use a private one.
    """
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
    if queue:
        app.conf.task_default_queue = queue
    for name in JOBS:
        if name != FAN_OUT:
            app.task(name=f"cobrabot.{name}", shared=False)(_bind(name, services))
    app.task(name=f"cobrabot.{FAN_OUT}", shared=False)(_fan_out(app, services))
    app.task(name=PLAN_CREDITOR, shared=False)(_plan_creditor(services))
    return app


def _bind(name: str, services: Services) -> Callable[[], dict[str, int]]:
    def task() -> dict[str, int]:
        return run_job(name, services)

    task.__name__ = name
    return task


def _plan_creditor(services: Services) -> Callable[[int], dict[str, int]]:
    def plan_creditor(creditor_id: int) -> dict[str, int]:
        return plan_creditor_reminders(services, creditor_id)

    return plan_creditor


def _fan_out(app: Celery, services: Services) -> Callable[[], dict[str, int]]:
    def plan_reminders() -> dict[str, int]:
        ids = creditor_ids(services)
        for creditor_id in ids:
            app.send_task(PLAN_CREDITOR, args=(creditor_id,))
        return {"creditors": len(ids)}

    return plan_reminders
