"""In-process budgets: checked before a call, charged after it.

A budget key's use is read once per period from what the ledger already holds (the
Recorder's ledger in process, or the sidecar's ``/api/budget-usage``), then kept up
to date with this process's own calls; so a restart does not reset it. Concurrent
calls that all pass the check before any is charged can overshoot a budget by at
most what those in-flight calls use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ai_usage_exporter.core.budgets import ON_EXCEED, BudgetSpec, period_start
from ai_usage_exporter.core.events.model import EventError
from ai_usage_exporter.core.events.parse import parse_events
from ai_usage_exporter.sdk.hub import _hub, prepare
from ai_usage_exporter.sdk.transport import HttpTransport

log = logging.getLogger("ai_usage_exporter.sdk")


class BudgetExceeded(Exception):
    """A `raise` budget is used up; the call was not sent."""

    def __init__(self, budget: str, key: str, unit: str, used: float, limit: float) -> None:
        who = f" for {key!r}" if key else ""
        super().__init__(
            f"budget {budget!r}{who} is used up: {used:g} of {limit:g} {unit}; the call was not sent"
        )
        self.budget = budget
        self.key = key
        self.unit = unit
        self.used = used
        self.limit = limit


class Budget:
    """A limit on tokens and/or dollars per scope value and period.

    ``scope`` is total, tenant, user, agent, workflow, task or service; ``match``
    limits a scoped budget to one value. ``on_exceed="raise"`` makes instrumented
    calls raise `BudgetExceeded` before they are sent once the budget is used up;
    ``"warn"`` logs once. Either way crossing ``warn_at`` (a fraction) logs once.
    """

    def __init__(
        self,
        scope: str = "total",
        *,
        tokens: int | None = None,
        usd: float | None = None,
        period: str = "day",
        warn_at: float = 0.8,
        on_exceed: str = "warn",
        match: str | None = None,
        name: str | None = None,
    ) -> None:
        if on_exceed not in ON_EXCEED:
            raise ValueError(f"on_exceed must be warn or raise, got {on_exceed!r}")
        self.spec = BudgetSpec(
            name=name or (f"{scope}:{match}:{period}" if match else f"{scope}:{period}"),
            scope=scope,
            tokens=tokens,
            usd=usd,
            period=period,
            warn_at=warn_at,
            match=match,
        )
        self.on_exceed = on_exceed

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"Budget({s.scope!r}, tokens={s.tokens}, usd={s.usd}, period={s.period!r}, "
            f"on_exceed={self.on_exceed!r})"
        )


class _KeyState:
    __slots__ = ("start", "tokens", "usd", "warned", "exceeded")

    def __init__(self, start: float, tokens: int, usd: float) -> None:
        self.start = start
        self.tokens = tokens
        self.usd = usd
        self.warned = False
        self.exceeded = False


class BudgetBook:
    """The budgets of this process and what each key has used in its current period."""

    def __init__(self, budgets: Sequence[Budget]) -> None:
        self.budgets = list(budgets)
        self.run_started = time.time()
        self.warnings = 0
        self._state: dict[tuple[int, str], _KeyState] = {}
        self._lock = threading.Lock()

    def used(self, budget: Budget, key: str = "") -> tuple[int, float]:
        """Tokens and dollars `budget` has used for `key` this period."""
        st = self._key_state(self.budgets.index(budget), budget, key, time.time())
        return st.tokens, st.usd

    def _key_state(self, i: int, b: Budget, key: str, now: float) -> _KeyState:
        start = period_start(b.spec.period, now, self.run_started)
        st = self._state.get((i, key))
        if st is None or st.start != start:
            tokens, usd = _load(b.spec, key, start)
            with self._lock:
                st = self._state.get((i, key))
                if st is None or st.start != start:
                    st = self._state[(i, key)] = _KeyState(start, tokens, usd)
        return st

    def check(self, attribution: Mapping[str, Any]) -> None:
        now = time.time()
        for i, b in enumerate(self.budgets):
            if b.on_exceed != "raise":
                continue
            key = b.spec.key_for(attribution)
            if key is None:
                continue
            st = self._key_state(i, b, key, now)
            over = _over(b.spec, st)
            if over is not None:
                raise BudgetExceeded(b.spec.name, key, *over)

    def charge(self, event: Mapping[str, Any]) -> None:
        now = time.time()
        measured: tuple[int, float] | None = None
        for i, b in enumerate(self.budgets):
            key = b.spec.key_for(event)
            if key is None:
                continue
            if measured is None:
                measured = _measure(event)
            st = self._key_state(i, b, key, now)
            with self._lock:
                st.tokens += measured[0]
                st.usd += measured[1]
                warn = not st.warned and _fraction(b.spec, st) >= b.spec.warn_at
                if warn:
                    st.warned = True
                    self.warnings += 1
                exceeded = not st.exceeded and _over(b.spec, st) is not None
                if exceeded:
                    st.exceeded = True
            if warn:
                log.warning(
                    "budget %r%s has used %.0f%% of its limit this %s",
                    b.spec.name,
                    f" for {key!r}" if key else "",
                    100 * _fraction(b.spec, st),
                    b.spec.period,
                )
            if exceeded:
                log.warning(
                    "budget %r%s is used up (%s); %s",
                    b.spec.name,
                    f" for {key!r}" if key else "",
                    _describe(b.spec, st),
                    "further calls raise BudgetExceeded"
                    if b.on_exceed == "raise"
                    else "calls continue (on_exceed=warn)",
                )


def _over(spec: BudgetSpec, st: _KeyState) -> tuple[str, float, float] | None:
    if spec.tokens is not None and st.tokens >= spec.tokens:
        return "tokens", float(st.tokens), float(spec.tokens)
    if spec.usd is not None and st.usd >= spec.usd:
        return "usd", st.usd, float(spec.usd)
    return None


def _fraction(spec: BudgetSpec, st: _KeyState) -> float:
    parts = []
    if spec.tokens is not None:
        parts.append(st.tokens / spec.tokens if spec.tokens else 1.0)
    if spec.usd is not None:
        parts.append(st.usd / spec.usd if spec.usd else 1.0)
    return max(parts)


def _describe(spec: BudgetSpec, st: _KeyState) -> str:
    parts = []
    if spec.tokens is not None:
        parts.append(f"{st.tokens} of {spec.tokens} tokens")
    if spec.usd is not None:
        parts.append(f"${st.usd:.6g} of ${spec.usd:g}")
    return ", ".join(parts)


def _measure(event: Mapping[str, Any]) -> tuple[int, float]:
    """Tokens (input + output) and dollars of one emitted event, priced like the ledger does."""
    try:
        (e,) = parse_events([prepare(dict(event))])
    except (EventError, ValueError) as exc:
        log.debug("budget: event not charged: %s", exc)
        return 0, 0.0
    return e.input_tokens + e.output_tokens, _hub.prices().price(e).total


def _load(spec: BudgetSpec, key: str, start: float) -> tuple[int, float]:
    """What the ledger already holds for this key since `start` (0 for a run budget)."""
    if spec.period == "run":
        return 0, 0.0
    value = key if spec.field is not None else None
    if _hub.recorder is not None:
        rows = _hub.recorder.ledger.usage_since(start, spec.field, value)
        tokens = sum(r[0] for r in rows.values())
        usd = sum(r[1] for r in rows.values())
        return tokens, usd
    t = _hub.transport
    if isinstance(t, HttpTransport):
        data = t.budget_usage(start, spec.field, value)
        if data is not None:
            return int(data.get("tokens", 0)), float(data.get("usd", 0.0))
    return 0, 0.0
