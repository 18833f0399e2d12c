"""Admission: may this call go upstream? One API-neutral step before an upstream is chosen.

In order: authenticate (a static client token, or a gateway key looked up in the
ledger) -> the key is not revoked or expired -> the route and the model are allowed
-> the key's budget for the period is not used up -> its RPM/TPM limits let it
through. The answer is an `Admission` (with the key, whose name and attribution the
call is then recorded under) or a `Rejection` each API renders in its own error shape
(see rejections.py).

Budgets are checked before and charged after, as the SDK's are. A key's use in its
period is read from the ledger's day buckets over every instance (so a restart and
the other sidecars' spend count), at most once per `usage_ttl_s` per key, and kept
up to date with this sidecar's own calls in between. What can overshoot a budget:
the calls in flight when it is reached (each admitted before any of them was
charged), plus, in a fleet, what other sidecars spent in the last `usage_ttl_s`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ai_usage_exporter.core.budgets import BudgetSpec, Usage, gauges, period_start
from ai_usage_exporter.gateway.keys import DEFAULT_TTL_S, KeyCache, looks_like_key, malformed, shown
from ai_usage_exporter.gateway.limits import Limited, LimiterUnavailable, LocalLimiter, RedisLimiter
from ai_usage_exporter.gateway.rejections import Rejection, iso
from ai_usage_exporter.ledger import Ledger
from ai_usage_exporter.ledger.keys import NANO, KeyRecord

log = logging.getLogger("ai_usage_exporter.gateway")

PERIOD_WORDS = {"day": "daily", "month": "monthly"}
DEFAULT_USAGE_TTL_S = 1.0
MISSING = (
    "this gateway needs a key: send Authorization: Bearer <key> (a gateway key made with "
    "`ai-usage-exporter keys create`, or a client token)"
)
WRONG = "the bearer token is not a valid client token or gateway key"


@dataclass(frozen=True, slots=True)
class Admission:
    """A call let through; `key` is None for a static client token or an open gateway."""

    key: KeyRecord | None


def credential(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The caller's secret, wherever its API puts it.

    OpenAI and most clients send ``Authorization: Bearer``; Anthropic's SDK sends
    ``x-api-key`` and Gemini's ``x-goog-api-key``, so a native route needs no header
    rewriting by the client.
    """
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in (b"authorization", b"x-api-key", b"x-goog-api-key"):
            found.setdefault(name, value)
    auth = found.get(b"authorization")
    if auth is not None:
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip().decode("latin-1")
        return None
    for name in (b"x-api-key", b"x-goog-api-key"):
        other = found.get(name)
        if other is not None and other.strip():
            return other.strip().decode("latin-1")
    return None


def next_period_start(period: str, now: float) -> float:
    start = period_start(period, now, 0.0)
    if period == "day":
        return start + 86400.0
    t = datetime.fromtimestamp(start, UTC)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.replace(year=year, month=month).timestamp()


def key_budget_spec(key: KeyRecord) -> BudgetSpec | None:
    """A key's budget in the words of budgets.py, for the ai_budget_* gauges."""
    if key.budget_nusd is None and key.budget_tokens is None:
        return None
    return BudgetSpec(
        name=key.name,
        scope="key",
        tokens=key.budget_tokens,
        usd=key.budget_usd,
        period=key.period,
        match=key.name,
    )


class _Use:
    """A key's use this period: what the ledger said at the last read, plus our charges since."""

    __slots__ = ("start", "tokens", "nusd", "local_tokens", "local_nusd", "read_at", "refreshing")

    def __init__(self, start: float, tokens: int, nusd: int, read_at: float) -> None:
        self.start = start
        self.tokens = tokens
        self.nusd = nusd
        self.local_tokens = 0
        self.local_nusd = 0
        self.read_at = read_at
        self.refreshing = False


class Admitter:
    """Decides admission for every API's routes; charges the calls it let through."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        client_tokens: Sequence[str] = (),
        limiter: LocalLimiter | RedisLimiter | None = None,
        key_cache_s: float = DEFAULT_TTL_S,
        usage_ttl_s: float = DEFAULT_USAGE_TTL_S,
        clock: Callable[[], float] = time.time,
        on_reject: Callable[[Rejection], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.client_tokens = [t.encode() for t in client_tokens]
        self.limiter = limiter if limiter is not None else LocalLimiter()
        self.keys = KeyCache(ledger, key_cache_s)
        self.usage_ttl_s = usage_ttl_s
        self.clock = clock
        self.on_reject = on_reject
        self._use: dict[str, _Use] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # period -> (start, next start) of the current one: date arithmetic once a period.
        self._periods: dict[str, tuple[float, float]] = {}

    def _period(self, period: str, now: float) -> tuple[float, float]:
        span = self._periods.get(period)
        if span is None or not span[0] <= now < span[1]:
            span = self._periods[period] = (
                period_start(period, now, 0.0),
                next_period_start(period, now),
            )
        return span

    def set_client_tokens(self, tokens: Sequence[str]) -> None:
        self.client_tokens = [t.encode() for t in tokens]

    async def admit(
        self, secret: str | None, route: str, model: str | None
    ) -> Admission | Rejection:
        """Admission or the reason for refusal; refusals are counted by reason.

        `model` None (a model listing) skips the model check.
        """
        try:
            result: Admission | Rejection = await self._decide(secret, route, model)
        except Exception as exc:  # noqa: BLE001 - any ledger failure: refuse, never 500
            # Keys and budgets cannot be checked, so nothing goes upstream (fail closed).
            log.error("gateway admission: the ledger could not be read: %s", exc)
            result = Rejection(
                503,
                "ledger_unavailable",
                "the gateway could not read its keys or budgets from the ledger "
                f"({type(exc).__name__}); try again shortly",
            )
        if isinstance(result, Rejection) and self.on_reject is not None:
            self.on_reject(result)
        return result

    async def _decide(
        self, secret: str | None, route: str, model: str | None
    ) -> Admission | Rejection:
        if secret is None:
            if self.client_tokens or await self.keys.any_keys():
                return Rejection(401, "unauthorized", MISSING)
            return Admission(None)
        given = secret.encode("latin-1")
        matched = False
        for token in self.client_tokens:
            # No early exit: the time taken does not depend on which token matched.
            matched |= hmac.compare_digest(given, token)
        if matched:
            return Admission(None)
        if not looks_like_key(secret):
            if self.client_tokens or await self.keys.any_keys():
                return Rejection(401, "unauthorized", WRONG)
            return Admission(None)
        problem = malformed(secret)
        if problem is not None:
            return Rejection(401, "unauthorized", problem)
        key = await self.keys.lookup(secret)
        if key is None:
            return Rejection(401, "unauthorized", f"unknown gateway key {shown(secret)!r}")
        return await self._check_key(key, route, model)

    async def _check_key(
        self, key: KeyRecord, route: str, model: str | None
    ) -> Admission | Rejection:
        now = self.clock()
        if key.revoked_at is not None:
            return Rejection(
                401,
                "unauthorized",
                f"gateway key {key.name!r} was revoked at {iso(key.revoked_at)}",
                key=key.name,
            )
        if key.expires_at is not None and key.expires_at <= now:
            return Rejection(
                401,
                "expired",
                f"gateway key {key.name!r} expired at {iso(key.expires_at)}",
                key=key.name,
            )
        if key.routes is not None and route not in key.routes:
            return Rejection(
                403,
                "route_not_allowed",
                f"gateway key {key.name!r} may not use route {route!r}; "
                f"allowed: {', '.join(key.routes)}",
                key=key.name,
            )
        if (
            model is not None
            and key.models is not None
            and not any(fnmatch.fnmatchcase(model, m) for m in key.models)
        ):
            return Rejection(
                403,
                "model_not_allowed",
                f"gateway key {key.name!r} may not use model {model!r}; "
                f"allowed: {', '.join(key.models)}",
                key=key.name,
            )
        if key.budget_nusd is not None or key.budget_tokens is not None:
            start, resets = self._period(key.period, now)
            use = self._known_use(key.name, start)
            if use is None:
                use = await self._read_use(key.name, start)
            over = _over_budget(key, use, now, resets)
            if over is not None:
                return over
        if key.rpm is not None or key.tpm is not None:
            limiter = self.limiter
            if isinstance(limiter, LocalLimiter):
                # Nothing to wait for in memory: no coroutine per call.
                limited = limiter.check_now(key.name, key.rpm, key.tpm)
            else:
                try:
                    limited = await limiter.check(key.name, key.rpm, key.tpm)
                except LimiterUnavailable as exc:
                    return Rejection(503, "rate_limiter_unavailable", str(exc), key=key.name)
            if limited is not None:
                return _rate_limited(key, limited, now)
        return Admission(key)

    # ------------------------------------------------------------ budgets

    def _known_use(self, name: str, start: float) -> _Use | None:
        """The key's use this period as known here, or None when it must be read first.

        A figure older than `usage_ttl_s` still serves this call; a refresh for the next
        ones starts in the background.
        """
        use = self._use.get(name)
        if use is None or use.start != start:
            return None
        if not use.refreshing and time.monotonic() - use.read_at >= self.usage_ttl_s:
            use.refreshing = True
            self._spawn(self._refresh(name, use))
        return use

    async def _read_use(self, name: str, start: float) -> _Use:
        """The key's use from the ledger, for its first call of a period."""
        mono = time.monotonic()
        tokens, nusd, _ = await asyncio.to_thread(self.ledger.key_usage, name, start)
        use = self._use.get(name)
        if use is None or use.start != start:
            use = self._use[name] = _Use(start, tokens, nusd, mono)
        return use

    async def _refresh(self, name: str, use: _Use) -> None:
        # Charges made while the read runs are kept on top of it; those made before
        # it are in the ledger by then, or within a writer's commit of it.
        seen_tokens, seen_nusd = use.local_tokens, use.local_nusd
        try:
            tokens, nusd, _ = await asyncio.to_thread(self.ledger.key_usage, name, use.start)
        except Exception:  # noqa: BLE001 - keep the figure we have; retry after the TTL
            use.read_at = time.monotonic()
            return
        finally:
            use.refreshing = False
        use.tokens, use.nusd = tokens, nusd
        use.local_tokens -= seen_tokens
        use.local_nusd -= seen_nusd
        use.read_at = time.monotonic()

    def charge(self, key: KeyRecord, tokens: int, cost_usd: float | None) -> None:
        """Add a finished call's tokens and cost to its key's budget and TPM bucket."""
        use = self._use.get(key.name)
        if use is not None and use.start == self._period(key.period, self.clock())[0]:
            use.local_tokens += tokens
            use.local_nusd += round((cost_usd or 0.0) * NANO)
        if key.tpm is not None and tokens:
            if isinstance(self.limiter, LocalLimiter):
                self.limiter.charge_now(key.name, key.tpm, tokens)
            else:
                self._spawn(self.limiter.charge(key.name, key.tpm, tokens))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if isinstance(self.limiter, RedisLimiter):
            await self.limiter.aclose()

    # ------------------------------------------------------------ gauges

    def budget_rows(self) -> list[dict[str, Any]]:
        """The ai_budget_* rows of every key with a budget (scope "key")."""
        now = self.clock()
        rows: list[dict[str, Any]] = []
        for key in self.ledger.list_keys():
            spec = key_budget_spec(key)
            if spec is None or key.revoked_at is not None:
                continue
            start = period_start(key.period, now, 0.0)
            tokens, nusd, requests = self.ledger.key_usage(key.name, start)
            # Minute buckets of the last hour: the burn rate's window.
            hour = self.ledger.key_usage(key.name, max(start, now - 3600.0), step=60)
            rows.extend(
                gauges(
                    spec,
                    key.name,
                    Usage(tokens, nusd / NANO, requests),
                    Usage(hour[0], hour[1] / NANO, hour[2]),
                )
            )
        return rows


def _over_budget(key: KeyRecord, use: _Use, now: float, resets: float) -> Rejection | None:
    used_tokens = use.tokens + use.local_tokens
    used_nusd = use.nusd + use.local_nusd
    word = PERIOD_WORDS.get(key.period, key.period)
    if key.budget_nusd is not None and used_nusd >= key.budget_nusd:
        used, limit = used_nusd / NANO, key.budget_nusd / NANO
        return Rejection(
            429,
            "budget",
            f"gateway key {key.name!r} has used its {word} budget: ${_dollars(used)} of "
            f"${_dollars(limit)}; it resets at {iso(resets)}",
            key=key.name,
            unit="usd",
            used=used,
            limit=limit,
            resets_at=resets,
            retry_after=resets - now,
        )
    if key.budget_tokens is not None and used_tokens >= key.budget_tokens:
        return Rejection(
            429,
            "budget",
            f"gateway key {key.name!r} has used its {word} budget: {used_tokens} of "
            f"{key.budget_tokens} tokens; it resets at {iso(resets)}",
            key=key.name,
            unit="tokens",
            used=float(used_tokens),
            limit=float(key.budget_tokens),
            resets_at=resets,
            retry_after=resets - now,
        )
    return None


def _dollars(amount: float) -> str:
    """Dollars to the micro-dollar, without trailing zeros: 0.000025, 12.5, 100."""
    return f"{amount:.6f}".rstrip("0").rstrip(".")


def _rate_limited(key: KeyRecord, limited: Limited, now: float) -> Rejection:
    what = "requests" if limited.unit == "requests_per_minute" else "tokens"
    return Rejection(
        429,
        "rate_limit",
        f"gateway key {key.name!r} is over its limit of {limited.limit} {what} per minute; "
        f"retry in {limited.retry_after:.3g} s",
        key=key.name,
        unit=limited.unit,
        used=round(limited.used, 3),
        limit=float(limited.limit),
        resets_at=now + limited.retry_after,
        retry_after=limited.retry_after,
    )
