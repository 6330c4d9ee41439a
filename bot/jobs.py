"""Background jobs: the same functions run in-process (embedded) or as Celery tasks (with Redis)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.promises import remind_promises, resolve_promises

if TYPE_CHECKING:
    from bot.services import Services

logger = logging.getLogger(__name__)


def dispatch_outbox(services: Services) -> dict[str, int]:
    """Send what is due in the outbox (replies, reminders, agent messages), one batch."""
    report = services.dispatcher.run_once().as_dict()
    if any(report.values()):
        logger.info("dispatch: %s", report)
    return report


def promise_maintenance(services: Services) -> dict[str, int]:
    """Remind promises due tomorrow, settle kept and broken ones; one transaction, safe to repeat."""
    now = services.clock()
    with services.database.unit_of_work() as uow:
        reminded = remind_promises(uow.session, now)
        resolved = resolve_promises(uow.session, now)
        uow.commit()
    counts = {"reminded": reminded.reminded, "kept": resolved.kept, "broken": resolved.broken}
    logger.info("promise maintenance: %s", counts)
    return counts


def plan_reminders_job(services: Services) -> dict[str, int]:
    """Plan every creditor's due reminders, one creditor per transaction (Celery fans the same out, see tasks)."""
    from bot.campaigns import PlanReport

    totals = PlanReport().as_dict()
    for creditor_id in creditor_ids(services):
        for key, value in plan_creditor_reminders(services, creditor_id).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def creditor_ids(services: Services) -> list[int]:
    from sqlalchemy import select

    from bot.models import Creditor

    with services.database.session() as session:
        return list(session.scalars(select(Creditor.id).order_by(Creditor.id)))


def plan_creditor_reminders(services: Services, creditor_id: int) -> dict[str, int]:
    """Re-score one creditor's debtors (the segment picks the cadence), then plan and queue their due reminders."""
    from bot.campaigns import plan_reminders
    from bot.risk import score_debtors

    now = services.clock()
    with services.database.unit_of_work() as uow:
        score_debtors(uow.session, creditor_id, now)
        report = plan_reminders(uow.session, now, creditor_id=creditor_id, commit_pages=True)
        uow.commit()
    return report.as_dict()


def expire_payment_links(services: Services) -> dict[str, int]:
    """Mark active or pending payment links past their expiry as expired (one set-based UPDATE)."""
    from bot.payments.links import expire_links

    with services.database.unit_of_work() as uow:
        expired = expire_links(uow.session, services.clock())
        uow.commit()
    if expired:
        logger.info("payment links expired: %d", expired)
    return {"expired": expired}


# name -> (function, interval in seconds). The scheduler fires each; the worker registers each as a task.
JOBS: dict[str, tuple[Callable[[Services], dict[str, int]], int]] = {
    "dispatch_outbox": (dispatch_outbox, 5),
    "promise_maintenance": (promise_maintenance, 15 * 60),
    "plan_reminders": (plan_reminders_job, 300),
    "expire_payment_links": (expire_payment_links, 15 * 60),
}


def run_job(name: str, services: Services) -> dict[str, int]:
    job, _interval = JOBS[name]
    return job(services)
