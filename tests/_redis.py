"""The machine's Redis for the gateway's shared rate limits, or a skip (a failure in CI)."""

from __future__ import annotations

import os
import uuid

import pytest

REDIS_ENV = "AI_USAGE_EXPORTER_TEST_REDIS_URL"
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    """A Redis that answers PING; skips the test without one, fails it in CI."""
    url = os.environ.get(REDIS_ENV, DEFAULT_URL)
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError) as exc:
        message = f"no Redis answers at {url} ({exc}); set {REDIS_ENV} or start redis-server"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


def unique_prefix() -> str:
    """A key prefix no other test (or run) uses, so tests share one Redis safely."""
    return f"aue-test:{uuid.uuid4().hex[:12]}"
