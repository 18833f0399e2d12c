"""Admission's parts on their own: key format and lookup, rate-limit buckets, refusal shapes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from _redis import redis_url, unique_prefix
from ai_usage_exporter.gateway.admission import (
    Admission,
    Admitter,
    credential,
    next_period_start,
)
from ai_usage_exporter.gateway.keys import KEY_PATTERN, generate_key, hash_key, malformed
from ai_usage_exporter.gateway.limits import Limited, LocalLimiter, RedisLimiter
from ai_usage_exporter.gateway.rejections import (
    Rejection,
    anthropic_body,
    gemini_body,
    headers,
    openai_body,
)
from ai_usage_exporter.ledger import open_ledger
from ai_usage_exporter.ledger.keys import KeyRecord


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# ---------------------------------------------------------------- keys


def test_keys_have_the_prefix_256_random_bits_and_are_stored_as_sha256() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for k in keys:
        assert KEY_PATTERN.match(k) and len(k) == 47 and malformed(k) is None
        assert hash_key(k) == hashlib.sha256(k.encode()).hexdigest()
    assert malformed("aue_" + "x" * 42) == (
        "malformed gateway key 'aue_xxxx…' (46 characters): a key is 'aue_' followed by 43 "
        "letters, digits, '-' or '_', as `ai-usage-exporter keys create` printed it"
    )


def test_credential_is_read_from_each_apis_header() -> None:
    assert credential([(b"authorization", b"Bearer aue_1")]) == "aue_1"
    assert credential([(b"x-api-key", b"aue_2")]) == "aue_2"  # Anthropic
    assert credential([(b"x-goog-api-key", b"aue_3")]) == "aue_3"  # Gemini
    # Authorization wins; a non-bearer Authorization is no credential.
    assert credential([(b"x-api-key", b"b"), (b"authorization", b"Bearer a")]) == "a"
    assert credential([(b"authorization", b"Basic dXNlcg==")]) is None
    assert credential([]) is None


def _record(name: str, secret: str, **kw: Any) -> KeyRecord:
    return KeyRecord(
        name=name,
        key_hash=hash_key(secret),
        key_prefix=secret[:8],
        created_at=0.0,
        updated_at=0.0,
        **kw,
    )


def test_keys_are_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(str(tmp_path / "k.db"))
    right = generate_key()
    ledger.insert_key(_record("k", right))
    # A wrong key is looked up by its hash like the right one; the stored hash is then
    # compared digest-wide, so where a wrong key differs does not show in the time.
    wrong = generate_key()
    admitter = Admitter(ledger, key_cache_s=3600)
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    async def run() -> tuple[list[float], list[float]]:
        assert isinstance(await admitter.admit(right, "r", "m"), Admission)
        assert isinstance(await admitter.admit(wrong, "r", "m"), Rejection)
        monkeypatch.setattr(hmac, "compare_digest", spy)
        await admitter.admit(right, "r", "m")
        monkeypatch.setattr(hmac, "compare_digest", real)
        # Interleaved, so load on the machine hits both alike.
        t_right: list[float] = []
        t_wrong: list[float] = []
        for _ in range(2000):
            for secret, times in ((right, t_right), (wrong, t_wrong)):
                t0 = time.perf_counter()
                await admitter.keys.lookup(secret)
                times.append(time.perf_counter() - t0)
        return t_right, t_wrong

    t_right, t_wrong = asyncio.run(run())
    assert compared == [(64, 64)]  # the whole hex digest, through hmac.compare_digest
    ratio = statistics.median(t_right) / statistics.median(t_wrong)
    # Both answers come from the cache in the same steps; only noise tells them apart.
    assert 0.5 < ratio < 2.0, ratio
    ledger.close()


# ---------------------------------------------------------------- buckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_local_rpm_bucket_is_exact() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)

    async def run() -> None:
        for _ in range(60):
            assert await limiter.check("k", 60, None) is None
        assert await limiter.check("k", 60, None) == Limited("requests_per_minute", 60, 60.0, 1.0)
        clock.now += 0.5
        assert await limiter.check("k", 60, None) == Limited("requests_per_minute", 60, 59.5, 0.5)
        clock.now += 0.5
        assert await limiter.check("k", 60, None) is None
        assert await limiter.check("other", 60, None) is None  # per key

    asyncio.run(run())


def test_local_tpm_bucket_is_charged_after_and_may_go_into_debt() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)

    async def run() -> None:
        assert await limiter.check("k", None, 60) is None
        await limiter.charge("k", 60, 100)  # 40 tokens of debt
        assert await limiter.check("k", None, 60) == Limited("tokens_per_minute", 60, 100.0, 40.0)
        clock.now += 40
        # Back to 0: still nothing to spend, one token's wait.
        assert await limiter.check("k", None, 60) == Limited("tokens_per_minute", 60, 60.0, 1.0)
        clock.now += 1
        assert await limiter.check("k", None, 60) is None

    asyncio.run(run())


def test_redis_buckets_match_the_local_ones() -> None:
    url = redis_url()

    async def run() -> None:
        limiter = RedisLimiter(url, prefix=unique_prefix())
        try:
            for _ in range(60):
                assert await limiter.check("k", 60, None) is None
            limited = await limiter.check("k", 60, None)
            assert limited is not None and limited.unit == "requests_per_minute"
            # Redis's clock moved on while we called (more on a loaded machine): under 1 s.
            assert 0 < limited.retry_after <= 1.0 and limited.limit == 60
            assert 59 <= limited.used <= 60
            assert await limiter.check("t", None, 60) is None
            await limiter.charge("t", 60, 100)
            limited = await limiter.check("t", None, 60)
            assert limited is not None and limited.unit == "tokens_per_minute"
            assert 35.0 < limited.retry_after <= 40.0
        finally:
            await limiter.aclose()

    asyncio.run(run())


# ---------------------------------------------------------------- periods and shapes


def test_budget_periods_reset_at_utc_midnight_and_month_start() -> None:
    assert next_period_start("day", _ts("2026-12-31T23:59:59")) == _ts("2027-01-01T00:00:00")
    assert next_period_start("month", _ts("2026-12-15T10:00:00")) == _ts("2027-01-01T00:00:00")
    assert next_period_start("month", _ts("2026-02-28T10:00:00")) == _ts("2026-03-01T00:00:00")


REFUSED = Rejection(
    429,
    "budget",
    "gateway key 'a' has used its daily budget: $5 of $5; it resets at 2026-12-03T00:00:00Z",
    key="a",
    unit="usd",
    used=5.0,
    limit=5.0,
    resets_at=_ts("2026-12-03T00:00:00"),
    retry_after=3600.2,
)


def test_each_api_gets_the_refusal_in_its_own_error_shape() -> None:
    message = REFUSED.message
    assert headers(REFUSED) == {"retry-after": "3601"}
    assert openai_body(REFUSED) == {
        "error": {
            "message": message,
            "type": "rate_limit_exceeded",
            "param": None,
            "code": "budget",
            "key": "a",
            "unit": "usd",
            "used": 5.0,
            "limit": 5.0,
            "resets_at": "2026-12-03T00:00:00Z",
            "retry_after_s": 3600.2,
        }
    }
    assert anthropic_body(REFUSED) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": message},
    }
    assert gemini_body(REFUSED) == {
        "error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}
    }
    denied = Rejection(401, "unauthorized", "no")
    assert headers(denied) == {"www-authenticate": 'Bearer realm="ai-usage-exporter"'}
    assert anthropic_body(denied)["error"]["type"] == "authentication_error"
    assert gemini_body(denied)["error"]["status"] == "UNAUTHENTICATED"
    assert gemini_body(Rejection(403, "model_not_allowed", "no"))["error"]["status"] == (
        "PERMISSION_DENIED"
    )


def test_a_ledger_that_cannot_be_read_refuses_with_503(tmp_path: Path) -> None:
    ledger = open_ledger(str(tmp_path / "k.db"))
    secret = generate_key()
    ledger.insert_key(_record("k", secret))
    ledger.close()  # every read now fails
    refused: list[str] = []
    admitter = Admitter(ledger, on_reject=lambda r: refused.append(r.reason))
    result = asyncio.run(admitter.admit(secret, "r", "m"))
    assert isinstance(result, Rejection)
    assert (result.status, result.reason) == (503, "ledger_unavailable")
    assert result.message.startswith("the gateway could not read its keys or budgets from the ")
    assert refused == ["ledger_unavailable"]
