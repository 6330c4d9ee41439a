"""Token buckets, in-process and in real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from bot.ratelimit import DEFAULT_RATES, LocalRateLimiter, Rate, RedisRateLimiter, bucket_keys


class Ticking:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_local_bucket_allows_the_burst_then_says_how_long_to_wait():
    clock = Ticking()
    limiter = LocalRateLimiter(clock)
    rate = Rate(per_second=2.0, burst=2)
    assert [limiter.acquire("k", rate) for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("k", rate) == pytest.approx(0.5)
    clock.now = 0.5
    assert limiter.acquire("k", rate) == 0.0
    assert limiter.acquire("other", rate) == 0.0  # buckets are per key


def test_telegram_draws_from_the_chat_bucket_first_then_the_global_one():
    keys = bucket_keys("telegram", "777", DEFAULT_RATES)
    assert [key for key, _ in keys] == ["telegram:chat:777", "telegram"]
    assert bucket_keys("sms", "+569", DEFAULT_RATES) == [("sms", Rate(1.0, 1))]
    assert bucket_keys("webchat", "x", DEFAULT_RATES) == []


def test_redis_bucket_is_shared_and_falls_back_when_redis_is_gone(redis_client):
    client = redis_client
    key, rate = f"test-{uuid.uuid4().hex}", Rate(per_second=1.0, burst=1)
    first, second = RedisRateLimiter(client), RedisRateLimiter(client)
    assert first.acquire(key, rate) == 0.0
    assert 0.0 < second.acquire(key, rate) <= 1.0  # the other worker sees the same bucket
    dead = RedisRateLimiter(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2))
    assert dead.acquire(key, rate) == 0.0  # degraded to in-process, still limiting
    assert dead.acquire(key, rate) > 0.0
