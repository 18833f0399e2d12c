"""Time series from the time-bucket rollup, for charts (pure).

`parse_query` validates the query parameters of GET /api/metrics/timeseries;
`build` turns the ledger's bucket sums into the response: every bucket of the
range has a value, series are sorted by their total, and those past the limit
are folded into one "other" series.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ai_usage_exporter.core.rollup import (
    BUCKETS_MS,
    COST_TOTAL,
    DUR_BUCKETS,
    DUR_COUNT,
    DUR_SUM_US,
    NANO,
    REQUESTS,
    SCOPES,
    STEPS,
    TOKEN_COLUMNS,
    VALUE_COLUMNS,
)
from ai_usage_exporter.core.shapes import TOKEN_FIELDS

UNITS: dict[str, str] = {
    "cost": "usd",
    "tokens": "tokens",
    "requests": "requests",
    "errors": "requests",
    "duration": "ms",
}
# `by` -> the bucket columns grouped by; "type" splits tokens by kind instead.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "service": ("service",),
    "model": ("provider", "model"),
    "agent": ("agent",),
    "tenant": ("tenant",),
    "tool": ("tool",),
    "type": (),
}
STATS: tuple[str, ...] = ("p50", "p95", "p99", "avg")
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_POINTS = 20_000
OTHER = "other"
NONE_KEY = "(none)"
_QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ParamError(ValueError):
    """A query parameter is wrong; names the parameter and the value given."""

    def __init__(self, name: str, value: object, message: str) -> None:
        super().__init__(f"{name}: {message}, got {value!r}")
        self.name = name
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        # index -1: not about one event of a body (the shape of every error detail).
        return {"index": -1, "field": self.name, "value": self.value, "message": str(self)}


def parse_duration(name: str, value: object) -> float:
    """`90d`, `12h`, `30m`, `45s`, `2w` (or a number of seconds) as seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    m = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise ParamError(name, value, "expected a duration such as 90d, 12h, 30m or 2w")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_scope(values: Sequence[str]) -> str:
    """The `scope` query parameter (given at most once): "instance" when absent."""
    if not values:
        return "instance"
    value = values[0] if len(values) == 1 else ",".join(values)
    if value not in SCOPES:
        raise ParamError("scope", value, f"must be one of {', '.join(SCOPES)}")
    return value


def parse_time(name: str, value: str, now: float) -> float:
    """Epoch seconds, RFC 3339 (a date alone or no offset means UTC), or `7d` meaning 7 days ago."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or number < 0:
            raise ParamError(name, value, "expected epoch seconds >= 0")
        return number
    if _DURATION.match(text):
        return now - parse_duration(name, text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ParamError(
            name, value, "expected RFC 3339 (2026-01-31T12:00:00Z), epoch seconds or an age like 7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class TimeseriesQuery:
    metric: str
    by: str | None
    step: str
    stat: str | None
    start: int  # first bucket start, inclusive
    end: int  # exclusive, a bucket boundary
    limit: int
    scope: str = "instance"  # see rollup.SCOPES

    @property
    def step_seconds(self) -> int:
        return STEPS[self.step]

    @property
    def group_by(self) -> tuple[str, ...]:
        return ("bucket", *(DIMENSIONS[self.by] if self.by else ()))

    @property
    def filters(self) -> dict[str, str]:
        return {"status": "error"} if self.metric == "errors" else {}


def parse_query(params: Mapping[str, Sequence[str]], now: float) -> TimeseriesQuery:
    """Validate the query string (each name to its list of values); raise ParamError."""
    known = {"metric", "by", "step", "stat", "from", "to", "limit", "scope"}
    for name, values in params.items():
        if name not in known:
            raise ParamError(
                name,
                values[0] if values else "",
                f"unknown parameter; known: {', '.join(sorted(known))}",
            )
        if len(values) > 1:
            raise ParamError(name, ",".join(values), "give it once")

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[0] if values else None

    # A parameter given empty is an error like any other bad value, not the default.
    metric = _default(one("metric"), "requests")
    if metric not in UNITS:
        raise ParamError("metric", metric, f"must be one of {', '.join(UNITS)}")
    by = one("by")
    if by is not None and by not in DIMENSIONS:
        raise ParamError("by", by, f"must be one of {', '.join(DIMENSIONS)}")
    if by == "type" and metric != "tokens":
        raise ParamError("by", by, "by=type splits tokens by kind; use it with metric=tokens")
    step = _default(one("step"), "1m")
    if step not in STEPS:
        raise ParamError("step", step, f"must be one of {', '.join(STEPS)}")
    stat = one("stat")
    if metric == "duration":
        stat = _default(stat, "p95")
        if stat not in STATS:
            raise ParamError("stat", stat, f"must be one of {', '.join(STATS)}")
    elif stat is not None:
        raise ParamError("stat", stat, "stat applies to metric=duration only")
    raw_limit = _default(one("limit"), str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise ParamError("limit", raw_limit, f"must be an integer from 1 to {MAX_LIMIT}")
    seconds = STEPS[step]
    raw_to = one("to")
    to = parse_time("to", raw_to, now) if raw_to is not None else now
    raw_from = one("from")
    # An hour of minutes by default; 60 buckets of a wider step.
    frm = parse_time("from", raw_from, now) if raw_from is not None else to - 60 * seconds
    if frm >= to:
        raise ParamError("from", raw_from, f"must be before to ({to:.0f})")
    start = int(frm // seconds) * seconds
    end = int(math.ceil(to / seconds)) * seconds
    if (end - start) // seconds > MAX_POINTS:
        raise ParamError(
            "step",
            step,
            f"{(end - start) // seconds} buckets in the range; the limit is {MAX_POINTS}, "
            "choose a wider step or a shorter range",
        )
    scope = parse_scope(params.get("scope", ()))
    return TimeseriesQuery(metric, by, step, stat, start, end, int(raw_limit), scope)


def _default(value: str | None, default: str) -> str:
    return default if value is None else value


def build(query: TimeseriesQuery, rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The response body from `Ledger.bucket_sums(..., query.group_by, query.filters)` rows."""
    step = query.step_seconds
    timestamps = list(range(query.start, query.end, step))
    n = len(timestamps)
    width = len(VALUE_COLUMNS)
    dims = DIMENSIONS[query.by] if query.by else ()
    grid: dict[tuple[str, ...], list[list[int] | None]] = {}
    for row in rows:
        i = (int(row[0]) - query.start) // step
        if not 0 <= i < n:
            continue
        key = tuple(row[1 : 1 + len(dims)])
        cells = grid.get(key)
        if cells is None:
            cells = grid[key] = [None] * n
        vec = cells[i]
        if vec is None:
            cells[i] = list(row[1 + len(dims) :])
        else:
            for j, v in enumerate(row[1 + len(dims) :]):
                vec[j] += v
    if query.by == "type":
        return _by_type(query, timestamps, grid.get((), [None] * n))
    if not query.by:
        grid.setdefault((), [None] * n)
    ranked = sorted(grid.items(), key=lambda kv: (-_total(query, kv[1]), kv[0]))
    series = [
        _series(query, _key_labels(query.by, dims, k), cells) for k, cells in ranked[: query.limit]
    ]
    rest = ranked[query.limit :]
    if rest:
        folded: list[list[int] | None] = [None] * n
        for _, cells in rest:
            for i, vec in enumerate(cells):
                if vec is None:
                    continue
                acc = folded[i]
                if acc is None:
                    folded[i] = list(vec)
                else:
                    for j in range(width):
                        acc[j] += vec[j]
        series.append(_series(query, (OTHER, {}), folded))
    return _response(query, timestamps, series)


def _response(
    query: TimeseriesQuery, timestamps: list[int], series: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "metric": query.metric,
        "by": query.by,
        "step": query.step,
        "stat": query.stat,
        "unit": UNITS[query.metric],
        "from": query.start,
        "to": query.end,
        "timestamps": timestamps,
        "series": series,
    }


def _by_type(
    query: TimeseriesQuery, timestamps: list[int], cells: list[list[int] | None]
) -> dict[str, Any]:
    ranked: list[tuple[int, str, list[int]]] = []
    for field, col in zip(TOKEN_FIELDS, TOKEN_COLUMNS, strict=True):
        values = [vec[col] if vec is not None else 0 for vec in cells]
        if any(values):
            ranked.append((-sum(values), field.removesuffix("_tokens"), values))
    # Kinds overlap (cached input is part of input), so there is no "other" to fold.
    series = [
        {"key": kind, "labels": {"type": kind}, "values": values}
        for _, kind, values in sorted(ranked, key=lambda r: r[0])[: query.limit]
    ]
    return _response(query, timestamps, series)


def _key_labels(
    by: str | None, dims: tuple[str, ...], key: tuple[str, ...]
) -> tuple[str, dict[str, str]]:
    if not by:
        return "total", {}
    labels = dict(zip(dims, key, strict=True))
    text = "/".join(key) if all(key) else (key[-1] or NONE_KEY)
    return text, labels


def _total(query: TimeseriesQuery, cells: list[list[int] | None]) -> int:
    col = DUR_COUNT if query.metric == "duration" else None
    total = 0
    for vec in cells:
        if vec is None:
            continue
        if col is not None:
            total += vec[col]
        elif query.metric == "cost":
            total += vec[COST_TOTAL]
        elif query.metric == "tokens":
            total += vec[TOKEN_COLUMNS[0]] + vec[TOKEN_COLUMNS[1]]
        else:
            total += vec[REQUESTS]
    return total


def _series(
    query: TimeseriesQuery, key_labels: tuple[str, dict[str, str]], cells: list[list[int] | None]
) -> dict[str, Any]:
    key, labels = key_labels
    return {"key": key, "labels": labels, "values": [_value(query, v) for v in cells]}


def _value(query: TimeseriesQuery, vec: list[int] | None) -> float | int | None:
    metric = query.metric
    if metric == "duration":
        if vec is None or not vec[DUR_COUNT]:
            return None
        if query.stat == "avg":
            return round(vec[DUR_SUM_US] / vec[DUR_COUNT] / 1000, 3)
        return round(quantile(_QUANTILES[query.stat or "p95"], [vec[i] for i in DUR_BUCKETS]), 3)
    if vec is None:
        return 0
    if metric == "cost":
        return vec[COST_TOTAL] / NANO
    if metric == "tokens":
        return vec[TOKEN_COLUMNS[0]] + vec[TOKEN_COLUMNS[1]]
    return vec[REQUESTS]


def quantile(q: float, counts: Sequence[int], bounds: Sequence[float] = BUCKETS_MS) -> float:
    """Prometheus' histogram_quantile over per-bucket (not cumulative) counts.

    Linear within the bucket holding the rank, from 0 for the first bucket; a rank
    in the +Inf bucket gives the highest finite bound.
    """
    total = sum(counts)
    rank = q * total
    cum = 0
    for i, c in enumerate(counts):
        if cum + c >= rank and c:
            if i >= len(bounds):
                return float(bounds[-1])
            lo = bounds[i - 1] if i else 0.0
            return lo + (bounds[i] - lo) * (rank - cum) / c
        cum += c
    return float(bounds[-1])
