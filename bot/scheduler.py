"""`cobrabot scheduler`: APScheduler fires the jobs; with Redis only one scheduler across all instances is
active (a leader lock with a lease) and the jobs go to Celery workers; without Redis they run in-process."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from bot.jobs import JOBS, run_job
from bot.services import Services

logger = logging.getLogger(__name__)
LEADER_KEY = "cobrabot:scheduler:leader"


class LeaderLock:
    """Redis `SET NX PX` lease, renewed while held; a crashed leader's lease simply runs out."""

    def __init__(self, client: Any, lease_seconds: float = 60.0, key: str = LEADER_KEY) -> None:
        self.client = client
        self.lease_ms = int(lease_seconds * 1000)
        self.key = key
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def acquire_or_renew(self) -> bool:
        if self.client.set(self.key, self.token, nx=True, px=self.lease_ms):
            return True
        # Renew only our own lease: compare-and-extend atomically.
        renewed = self.client.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0",
            1,
            self.key,
            self.token,
            self.lease_ms,
        )
        return bool(renewed)

    def release(self) -> None:
        self.client.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1,
            self.key,
            self.token,
        )


def job_runner(services: Services, name: str, leader: LeaderLock | None, send: Callable[[str], None] | None) -> None:
    """One tick of a job: skipped unless we lead; sent to Celery when there is a broker, else run here."""
    if leader is not None and not leader.acquire_or_renew():
        logger.debug("not the leader; %s skipped", name)
        return
    if send is not None:
        send(name)
    else:
        run_job(name, services)


def build_scheduler(services: Services, *, background: bool = False) -> tuple[BaseScheduler, LeaderLock | None]:
    """The jobs on their intervals; `background` runs them in a thread of the web process (embedded mode)."""
    leader, send = None, None
    if services.settings.redis_url:
        import redis

        from bot.tasks import make_celery

        leader = LeaderLock(redis.Redis.from_url(services.settings.redis_url))
        celery = make_celery(services)
        send = lambda name: celery.send_task(f"cobrabot.{name}")  # noqa: E731
    scheduler: BaseScheduler = BackgroundScheduler(timezone="UTC") if background else BlockingScheduler(timezone="UTC")
    for name, (_job, interval) in JOBS.items():
        scheduler.add_job(
            job_runner,
            "interval",
            seconds=interval,
            args=(services, name, leader, send),
            id=name,
            max_instances=1,
            coalesce=True,
            next_run_time=services.clock(),
        )
    return scheduler, leader
