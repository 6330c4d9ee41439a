"""Per-sender rate limits as token buckets: in Redis when configured (shared by every worker), in-process
otherwise. Defaults follow the providers' published limits."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int = 1


# SMS long code 1/s, WhatsApp 80/s, Telegram 30/s overall and 1/s per chat; email is the operator's call.
DEFAULT_RATES: dict[str, Rate] = {
    "sms": Rate(1.0, 1),
    "whatsapp": Rate(80.0, 80),
    "telegram": Rate(30.0, 30),
    "telegram:chat": Rate(1.0, 1),
    "email": Rate(10.0, 10),
}


def bucket_keys(channel: str, recipient: str, rates: dict[str, Rate]) -> list[tuple[str, Rate]]:
    """The buckets a send draws from: the most specific first, so a busy chat does not spend global tokens."""
    keys = []
    if f"{channel}:chat" in rates:
        keys.append((f"{channel}:chat:{recipient}", rates[f"{channel}:chat"]))
    if channel in rates:
        keys.append((channel, rates[channel]))
    return keys


class RateLimiter(Protocol):
    def acquire(self, key: str, rate: Rate) -> float:
        """Take one token: 0.0 if it was available, else the seconds until one will be (nothing taken)."""
        ...


class LocalRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str, rate: Rate) -> float:
        with self._lock:
            now = self._clock()
            tokens, updated = self._buckets.get(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - updated) * rate.per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate.per_second


# Atomic token bucket; Redis's own clock, so workers on different hosts agree.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1]) or burst
local ts = tonumber(data[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """Shared buckets in Redis; if Redis is unreachable, limits continue in-process (logged once per outage)."""

    def __init__(self, client: Any, prefix: str = "cobrabot:rate:") -> None:
        self._script = client.register_script(_BUCKET_LUA)
        self._prefix = prefix
        self._fallback = LocalRateLimiter()
        self.redis_down = False

    def acquire(self, key: str, rate: Rate) -> float:
        try:
            wait = float(self._script(keys=[self._prefix + key], args=[rate.per_second, rate.burst]))
        except Exception as exc:  # redis.RedisError and connection errors: degrade, never stop sending
            if not self.redis_down:
                logger.warning("redis unreachable (%s): rate limits degrade to in-process", type(exc).__name__)
            self.redis_down = True
            return self._fallback.acquire(key, rate)
        if self.redis_down:
            self.redis_down = False
            logger.warning("redis reachable again: rate limits are shared again")
        return wait


def make_rate_limiter(redis_url: str | None) -> RateLimiter:
    if not redis_url:
        return LocalRateLimiter()
    from bot.store import redis_client

    return RedisRateLimiter(redis_client(redis_url))
