"""Redis goes away: locks and rate limits degrade to in-process, /healthz says so (200, "degraded"), and webhooks
and the dispatcher keep working. The shared test Redis is never touched: a dead port, or a private redis-server."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from bot.models import Message
from bot.store import RedisLocks
from tests.faults.helpers import (
    MESSAGES,
    SID,
    count,
    free_port,
    message_sid,
    post_sms,
    sms_form,
    twilio_app,
    twilio_services,
)


def reply_ok(standin, replies: int = 10) -> None:
    for index in range(replies):
        standin.respond("POST", MESSAGES, 201, {"sid": f"SMb{index:031d}", "status": "queued", "account_sid": SID})


def test_redis_unreachable_from_the_start_degrades_and_keeps_serving(db, clock, standin, make_debtor):
    services = twilio_services(db, clock, standin.url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = twilio_app(services)
    debtor = make_debtor()
    health = app.test_client().get("/healthz")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded"
    assert health.get_json()["checks"]["redis"] == "down"
    assert health.get_json()["degraded"] == ["locks", "rate_limits"]
    started = time.monotonic()
    assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(1))).status_code == 200
    assert time.monotonic() - started < 5  # fails fast: no hanging on the dead port
    assert count(db, Message, Message.direction == "in") == 1
    reply_ok(standin)
    assert services.dispatcher.run_once().sent == 1  # the rate limiter fell back to in-process buckets
    assert services.locks.redis_down and services.dispatcher.limiter.redis_down


@pytest.fixture
def private_redis() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    wait_until_answers(port)
    yield process, port
    if process.poll() is None:
        process.terminate()
        process.wait(10)


def wait_until_answers(port: int, seconds: float = 10) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.slow
def test_redis_stopping_mid_run_degrades_then_recovers(db, clock, standin, make_debtor, private_redis):
    process, port = private_redis
    services = twilio_services(db, clock, standin.url, redis_url=f"redis://127.0.0.1:{port}/0")
    assert isinstance(services.locks, RedisLocks)
    app, debtor = twilio_app(services), make_debtor()
    reply_ok(standin)

    assert post_sms(app, sms_form(debtor.phone, "hola", message_sid(1))).status_code == 200
    assert app.test_client().get("/healthz").get_json()["status"] == "ok"
    assert services.dispatcher.run_once().sent == 1

    process.terminate()
    process.wait(10)
    assert post_sms(app, sms_form(debtor.phone, "12345678-5", message_sid(2))).status_code == 200
    health = app.test_client().get("/healthz")
    assert (health.status_code, health.get_json()["status"], health.get_json()["checks"]["redis"]) == (
        200,
        "degraded",
        "down",
    )
    assert services.dispatcher.run_once().sent >= 1
    assert services.locks.redis_down

    restarted = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until_answers(port)
        assert post_sms(app, sms_form(debtor.phone, "quiero pagar", message_sid(3))).status_code == 200
        assert not services.locks.redis_down  # the next lock went to Redis again
        assert app.test_client().get("/healthz").get_json()["status"] == "ok"
    finally:
        restarted.terminate()
        restarted.wait(10)
    assert count(db, Message, Message.direction == "in") == 3
