"""Requests and tokens per minute per gateway key: a token bucket, local or in Redis.

Each limit is a bucket holding up to `limit` units that refills at `limit / 60` per
second, so a key may burst its whole minute's allowance and then goes at the steady
rate; that is exact, with no window edges to game. A request takes one unit of the
RPM bucket. Tokens are only known after the call, so the TPM bucket is checked
before (refused while it is empty or in debt) and charged after with the call's
tokens, and may go into debt: the next calls wait until it has refilled.

Without Redis each sidecar keeps its own buckets (exact on one sidecar; a fleet of N
allows N times the limit). With `gateway.rate_limits.redis`, every sidecar uses the
same buckets in Redis: one Lua script per check, run atomically by Redis on its own
clock, so the limit holds for the whole fleet. When Redis cannot be reached the
check fails open (the call goes on) or closed (503), as configured, and is counted
in `ai_gateway_rate_limiter_errors_total`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("ai_usage_exporter.gateway")

WINDOW_S = 60.0
# After Redis failed, go straight to the configured failure behaviour for this long,
# so a Redis that hangs costs one timeout per second rather than one per call.
REDIS_BACKOFF_S = 1.0
REDIS_TIMEOUT_S = 0.25


@dataclass(frozen=True, slots=True)
class Limited:
    """A call refused by a rate limit: which one, how full, and when to retry."""

    unit: str  # "requests_per_minute" or "tokens_per_minute"
    limit: int
    used: float
    retry_after: float  # seconds


class LimiterUnavailable(Exception):
    """The shared limiter could not be asked, and the configuration says fail closed."""


def _refill(level: float, since: float, now: float, limit: int) -> float:
    return min(float(limit), level + max(0.0, now - since) * limit / WINDOW_S)


class LocalLimiter:
    """This sidecar's buckets, in memory; exact for one sidecar."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # (key name, unit) -> (level, time of level)
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def _level(self, key: str, unit: str, limit: int, now: float) -> float:
        level, since = self._buckets.get((key, unit), (float(limit), now))
        return _refill(level, since, now, limit)

    async def check(self, key: str, rpm: int | None, tpm: int | None) -> Limited | None:
        return self.check_now(key, rpm, tpm)

    def check_now(self, key: str, rpm: int | None, tpm: int | None) -> Limited | None:
        """`check` without a coroutine: nothing here waits, so the gateway calls it inline."""
        now = self.clock()
        if tpm is not None:
            level = self._level(key, "tpm", tpm, now)
            if level <= 0:
                return Limited(
                    "tokens_per_minute", tpm, tpm - level, max(-level, 1.0) * WINDOW_S / tpm
                )
        if rpm is not None:
            level = self._level(key, "rpm", rpm, now)
            if level < 1:
                return Limited(
                    "requests_per_minute", rpm, rpm - level, (1 - level) * WINDOW_S / rpm
                )
            self._buckets[(key, "rpm")] = (level - 1, now)
        return None

    async def charge(self, key: str, tpm: int, tokens: int) -> None:
        self.charge_now(key, tpm, tokens)

    def charge_now(self, key: str, tpm: int, tokens: int) -> None:
        """`charge` without a coroutine: nothing here waits, so the gateway calls it inline."""
        now = self.clock()
        self._buckets[(key, "tpm")] = (self._level(key, "tpm", tpm, now) - tokens, now)


# KEYS: rpm bucket, tpm bucket. ARGV: rpm, tpm (0: none), ttl seconds.
# Returns {allowed, unit (0 none, 1 rpm, 2 tpm), retry_after, used} (floats as strings:
# Redis truncates Lua numbers to integers).
CHECK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function level(key, limit)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, at = tonumber(v[1]), tonumber(v[2])
  if l == nil then return limit end
  return math.min(limit, l + math.max(0, now - at) * limit / 60)
end
local rpm, tpm, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 then
  local l = level(KEYS[2], tpm)
  if l <= 0 then
    return {0, 2, tostring(math.max(-l, 1) * 60 / tpm), tostring(tpm - l)}
  end
end
if rpm > 0 then
  local l = level(KEYS[1], rpm)
  if l < 1 then
    return {0, 1, tostring((1 - l) * 60 / rpm), tostring(rpm - l)}
  end
  redis.call('HSET', KEYS[1], 'l', tostring(l - 1), 't', tostring(now))
  redis.call('EXPIRE', KEYS[1], ttl)
end
return {1, 0, '0', '0'}
"""
# KEYS: tpm bucket. ARGV: tpm, tokens, ttl seconds.
CHARGE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tpm, tokens, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'l', 't')
local l, at = tonumber(v[1]), tonumber(v[2])
if l == nil then l = tpm else l = math.min(tpm, l + math.max(0, now - at) * tpm / 60) end
redis.call('HSET', KEYS[1], 'l', tostring(l - tokens), 't', tostring(now))
redis.call('EXPIRE', KEYS[1], ttl)
return tostring(l - tokens)
"""
# A bucket untouched for this long is full again; Redis may forget it.
_TTL_S = 2 * int(WINDOW_S)


class RedisLimiter:
    """The fleet's buckets in Redis, checked by one atomic script per call."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "aue:rl",
        fail_open: bool = True,
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = REDIS_TIMEOUT_S,
    ) -> None:
        from redis.asyncio import Redis

        self.url = url
        self.prefix = prefix
        self.fail_open = fail_open
        self.on_error = on_error
        self.clock = clock
        self.client: Redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._check = self.client.register_script(CHECK_SCRIPT)
        self._charge = self.client.register_script(CHARGE_SCRIPT)
        self._down_until = 0.0

    def _keys(self, key: str) -> list[str]:
        # The hash tag keeps both buckets of a key on one Redis Cluster slot.
        return [f"{self.prefix}:{{{key}}}:rpm", f"{self.prefix}:{{{key}}}:tpm"]

    def _failed(self, exc: BaseException | None) -> None:
        outcome = "fail_open" if self.fail_open else "fail_closed"
        if self.on_error is not None:
            self.on_error(outcome)
        if exc is not None:
            self._down_until = self.clock() + REDIS_BACKOFF_S
            log.warning(
                "gateway rate limiter: Redis %s failed (%s: %s); calls %s for %.0f s",
                _redact(self.url),
                type(exc).__name__,
                exc,
                "go on unlimited" if self.fail_open else "are refused",
                REDIS_BACKOFF_S,
            )
        if not self.fail_open:
            raise LimiterUnavailable(
                "the gateway's rate limiter (Redis) is unavailable and "
                "gateway.rate_limits.on_redis_error is closed"
            )

    async def check(self, key: str, rpm: int | None, tpm: int | None) -> Limited | None:
        from redis.exceptions import RedisError

        if self.clock() < self._down_until:
            self._failed(None)
            return None
        try:
            allowed, unit, retry, used = await self._check(
                keys=self._keys(key), args=[rpm or 0, tpm or 0, _TTL_S]
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        if int(allowed):
            return None
        if int(unit) == 1:
            assert rpm is not None
            return Limited("requests_per_minute", rpm, float(used), float(retry))
        assert tpm is not None
        return Limited("tokens_per_minute", tpm, float(used), float(retry))

    async def charge(self, key: str, tpm: int, tokens: int) -> None:
        from redis.exceptions import RedisError

        if self.clock() < self._down_until:
            return
        try:
            await self._charge(keys=self._keys(key)[1:], args=[tpm, tokens, _TTL_S])
        except (RedisError, OSError) as exc:
            self._down_until = self.clock() + REDIS_BACKOFF_S
            log.warning("gateway rate limiter: charging tokens in Redis failed: %s", exc)

    async def aclose(self) -> None:
        await self.client.aclose()


def _redact(url: str) -> str:
    """The Redis URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up: a client that waits that long is let through."""
    return str(max(1, math.ceil(seconds)))


Limiter = LocalLimiter | RedisLimiter
