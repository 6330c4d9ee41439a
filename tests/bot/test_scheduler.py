"""Background jobs: leader election over real Redis, the in-process path, and the Celery task path."""

from __future__ import annotations

import time
import uuid

import pytest

from bot.config import load_settings
from bot.jobs import JOBS
from bot.scheduler import LeaderLock, build_scheduler, job_runner
from bot.services import bootstrap
from bot.tasks import make_celery


def test_only_one_of_two_schedulers_leads_and_the_lease_passes_on(redis_client):
    key = f"test:leader:{uuid.uuid4().hex}"
    first, second = LeaderLock(redis_client, 0.3, key), LeaderLock(redis_client, 0.3, key)
    assert first.acquire_or_renew() is True
    assert second.acquire_or_renew() is False
    assert first.acquire_or_renew() is True  # renewing its own lease
    time.sleep(0.45)  # the leader "crashed": its lease runs out
    assert second.acquire_or_renew() is True
    assert first.acquire_or_renew() is False
    second.release()
    assert redis_client.get(key) is None


def test_job_runner_runs_in_process_without_a_broker(services, monkeypatch):
    ran = []
    monkeypatch.setitem(JOBS, "promise_maintenance", (lambda svc: ran.append(svc.clock()) or {}, 60))
    job_runner(services, "promise_maintenance", None, None)
    assert ran == [services.clock()]


def test_job_runner_sends_to_celery_only_when_leading(services, redis_client):
    key = f"test:leader:{uuid.uuid4().hex}"
    leader, other = LeaderLock(redis_client, 5, key), LeaderLock(redis_client, 5, key)
    sent = []
    job_runner(services, "promise_maintenance", leader, sent.append)
    job_runner(services, "promise_maintenance", other, sent.append)
    assert sent == ["promise_maintenance"]
    leader.release()


def test_scheduler_has_every_job_due_now(services):
    scheduler, leader = build_scheduler(services)
    assert leader is None
    assert sorted(job.id for job in scheduler.get_jobs()) == sorted(JOBS)


def test_celery_app_registers_each_job_and_runs_it(settings, db, clock, redis_client):
    celery_settings = load_settings(**(settings.model_dump() | {"redis_url": "redis://127.0.0.1:6379/15"}))
    app = make_celery(bootstrap(celery_settings, database=db, clock=clock))
    app.conf.task_always_eager = True
    assert {f"cobrabot.{name}" for name in JOBS} <= set(app.tasks)
    result = app.tasks["cobrabot.promise_maintenance"].delay().get()
    assert result == {"reminded": 0, "kept": 0, "broken": 0}


def test_make_celery_refuses_to_start_without_redis(services):
    with pytest.raises(ValueError, match="COBRABOT_REDIS_URL"):
        make_celery(services)


def test_two_celery_apps_in_one_process_each_run_their_own_services(settings, db, clock, redis_client, monkeypatch):
    # Celery's default shared tasks would attach the first app's callables to the second one.
    monkeypatch.setitem(JOBS, "promise_maintenance", (lambda svc: {"hour": svc.clock().hour}, 60))
    celery_settings = load_settings(**(settings.model_dump() | {"redis_url": "redis://127.0.0.1:6379/15"}))
    first = make_celery(bootstrap(celery_settings, database=db, clock=clock))
    later = type(clock)(clock.now.replace(hour=9))
    second = make_celery(bootstrap(celery_settings, database=db, clock=later))
    for app in (first, second):
        app.conf.task_always_eager = True
    assert first.tasks["cobrabot.promise_maintenance"].delay().get() == {"hour": 15}
    assert second.tasks["cobrabot.promise_maintenance"].delay().get() == {"hour": 9}
