"""Budgets: a limit on tokens or dollars per scope and period (pure).

One definition serves the SDK (which checks a budget before a call and charges it
after) and the sidecar (which shows budgets from its config as gauges). A budget's
use is summed from the ledger's events since the period began, so a restart never
resets it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# A budget's scope names the event field its use is summed per; "total" sums everything.
SCOPES: dict[str, str | None] = {
    "total": None,
    "tenant": "tenant",
    "user": "user",
    "agent": "agent",
    "workflow": "workflow_id",
    "workflow_id": "workflow_id",
    "task": "task",
    "service": "service",
    # A gateway key (its name): the per-key budgets the gateway enforces show as these.
    "key": "key",
}
# The event fields a budget can be summed per (the sidecar's /api/budget-usage `field`).
BUDGET_FIELDS: frozenset[str] = frozenset(f for f in SCOPES.values() if f is not None)
PERIODS: tuple[str, ...] = ("day", "month", "run")
ON_EXCEED: tuple[str, ...] = ("warn", "raise")


class BudgetConfigError(ValueError):
    """A budget is declared wrongly; the message names the field and value."""


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """What a budget limits: `tokens` and/or `usd` per `scope` value and `period`.

    `match` restricts a scoped budget to one value (e.g. tenant "acme"); without it
    every value of the scope has its own budget of the same size.
    """

    name: str
    scope: str = "total"
    tokens: int | None = None
    usd: float | None = None
    period: str = "day"
    warn_at: float = 0.8
    match: str | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise BudgetConfigError(
                f"budget {self.name!r}: scope must be one of {', '.join(SCOPES)}, got {self.scope!r}"
            )
        if self.period not in PERIODS:
            raise BudgetConfigError(
                f"budget {self.name!r}: period must be one of {', '.join(PERIODS)}, got {self.period!r}"
            )
        if self.tokens is None and self.usd is None:
            raise BudgetConfigError(f"budget {self.name!r}: give tokens, usd or both")
        if self.tokens is not None and (
            isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 0
        ):
            raise BudgetConfigError(
                f"budget {self.name!r}: tokens must be a non-negative integer, got {self.tokens!r}"
            )
        if self.usd is not None and (
            isinstance(self.usd, bool)
            or not isinstance(self.usd, int | float)
            or not math.isfinite(self.usd)
            or self.usd < 0
        ):
            raise BudgetConfigError(
                f"budget {self.name!r}: usd must be a non-negative number, got {self.usd!r}"
            )
        if isinstance(self.warn_at, bool) or not 0 < self.warn_at <= 1:
            raise BudgetConfigError(
                f"budget {self.name!r}: warn_at must be in (0, 1], got {self.warn_at!r}"
            )
        if self.scope == "total" and self.match is not None:
            raise BudgetConfigError(f"budget {self.name!r}: a total budget takes no match")

    @property
    def field(self) -> str | None:
        """The event field summed per value, or None for a total budget."""
        return SCOPES[self.scope]

    def key_for(self, attribution: Mapping[str, Any]) -> str | None:
        """The scope value an event with `attribution` is charged to; None if it is not."""
        f = self.field
        if f is None:
            return ""
        value = attribution.get(f)
        if value is None:
            return None
        value = str(value)
        if self.match is not None and value != self.match:
            return None
        return value


def period_start(period: str, now: float, run_started: float) -> float:
    """The epoch second the current period began (UTC days and months)."""
    if period == "run":
        return run_started
    t = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


@dataclass(frozen=True, slots=True)
class Usage:
    """What a budget key has used: tokens (input + output), dollars, calls."""

    tokens: int = 0
    usd: float = 0.0
    requests: int = 0


def hours_to_exhaustion(remaining: float, used_last_hour: float) -> float:
    """Hours until `remaining` is gone at the last hour's rate; +Inf when nothing burns."""
    if remaining <= 0:
        return 0.0
    if used_last_hour <= 0:
        return math.inf
    return remaining / used_last_hour


def gauges(spec: BudgetSpec, key: str, used: Usage, used_last_hour: Usage) -> list[dict[str, Any]]:
    """The gauge rows of one budget key, one per limited unit (tokens, usd)."""
    rows: list[dict[str, Any]] = []
    for unit, limit, now_used, hour_used in (
        ("tokens", spec.tokens, float(used.tokens), float(used_last_hour.tokens)),
        ("usd", spec.usd, used.usd, used_last_hour.usd),
    ):
        if limit is None:
            continue
        remaining = max(float(limit) - now_used, 0.0)
        rows.append(
            {
                "budget": spec.name,
                "scope": spec.scope,
                "key": key,
                "period": spec.period,
                "unit": unit,
                "limit": float(limit),
                "used": now_used,
                "remaining": remaining,
                "hours_to_exhaustion": hours_to_exhaustion(remaining, hour_used),
            }
        )
    return rows


def parse_budgets(value: Any, where: str) -> tuple[BudgetSpec, ...]:
    """The config file's `budgets:` section: a list of mappings, each a BudgetSpec."""
    if not isinstance(value, list):
        raise BudgetConfigError(f"{where}: budgets must be a list of budgets, got {value!r}")
    allowed = {"name", "scope", "tokens", "usd", "period", "warn_at", "match"}
    out: list[BudgetSpec] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise BudgetConfigError(f"{where}: budgets[{i}] must be a mapping, got {item!r}")
        unknown = sorted(set(item) - allowed)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
            guess = f"; did you mean {close[0]!r}?" if close else ";"
            raise BudgetConfigError(
                f"{where}: budgets[{i}]: unknown key {unknown[0]!r}{guess} "
                f"known: {', '.join(sorted(allowed))}"
            )
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BudgetConfigError(f"{where}: budgets[{i}]: name must be a non-empty string")
        if name in names:
            raise BudgetConfigError(f"{where}: budgets[{i}]: name {name!r} is used twice")
        if item.get("period") == "run":
            raise BudgetConfigError(
                f"{where}: budgets[{i}]: period run is for in-process budgets; use day or month"
            )
        names.add(name)
        try:
            out.append(BudgetSpec(**dict(item)))
        except BudgetConfigError as exc:
            raise BudgetConfigError(f"{where}: budgets[{i}]: {exc}") from None
    return tuple(out)
