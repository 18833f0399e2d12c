"""Rollup deltas: an event batch summed per attribution key (pure).

The ledger adds these deltas to its rollup table in the same transaction that stores
the events, and the metric state adds the same deltas to its counters; at start the
state is rebuilt from the rollup rows instead of a scan of every event.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.pricing.rates import UNPRICED_REASONS, Cost
from ai_usage_exporter.core.shapes import COUNT_FIELDS, TOKEN_FIELDS, USAGE_FIELDS

# Attribution columns of a rollup row; missing values are stored as ''.
KEY_FIELDS: tuple[str, ...] = (
    "service",
    "provider",
    "model",
    "operation",
    "status",
    "level",
    "tenant",
    "agent",
    "tool",
    "task",
    "node",
    "key",
)

# The sidecar that committed a rollup row. It leads the rollup table's primary key
# but is not part of a delta's key: a ledger adds its own instance when it stores
# deltas, and rebuilds counters from its own instance's rows, so sidecars sharing
# one PostgreSQL database never report one another's events.
INSTANCE = "instance"
# Rows of retired instances (pods gone for good) are folded into this one, so fleet
# totals keep them while no live sidecar reports them.
RETIRED_INSTANCE = "__retired__"
# Rows written before instances existed; the first sidecar to open the ledger adopts them.
UNASSIGNED_INSTANCE = ""
MAX_INSTANCE_CHARS = 253  # a DNS name, which a Kubernetes pod name is
# What a read covers: "instance", this sidecar's rows (the same events as its
# counters), or "fleet", every row of the ledger.
SCOPES: tuple[str, ...] = ("instance", "fleet")


def check_instance(name: str | None) -> str:
    """The instance name to store, or ValueError naming what is wrong with it.

    None is a ledger opened without an instance (tools, tests): it writes and reads
    the unassigned rows and adopts nothing.
    """
    if name is None:
        return UNASSIGNED_INSTANCE
    if not name or name.strip() != name:
        raise ValueError(
            f"instance must be a non-empty name without surrounding spaces, got {name!r}"
        )
    if len(name) > MAX_INSTANCE_CHARS:
        raise ValueError(
            f"instance must be at most {MAX_INSTANCE_CHARS} characters, got {len(name)}"
        )
    if not name.isprintable():
        raise ValueError(f"instance must not contain control characters, got {name!r}")
    if name == RETIRED_INSTANCE:
        raise ValueError(f"instance {name!r} is reserved for retired instances' rows")
    return name


BUCKETS_SECONDS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 600.0,
)  # fmt: skip
_BUCKETS_MS = tuple(b * 1000.0 for b in BUCKETS_SECONDS)
_NB = len(BUCKETS_SECONDS) + 1  # with +Inf
BUCKETS_MS = _BUCKETS_MS
HISTOGRAM_BUCKETS = _NB

# Every value is an integer: money in nanodollars, time in microseconds. Integer sums
# do not depend on the order of addition, so counters rebuilt from the rollup at start
# equal, to the last bit, the counters built live batch by batch.
NANO = 1_000_000_000
# Requests priced only approximately or not at all, by reason; "unpriced" keeps the
# name it had when unknown models were the only reason.
UNPRICED_COLUMNS: dict[str, str] = {
    r: "unpriced" if r == "unknown_model" else r for r in UNPRICED_REASONS
}
VALUE_COLUMNS: tuple[str, ...] = (
    "requests",
    *TOKEN_FIELDS,
    *COUNT_FIELDS,
    "cost_input_nusd",
    "cost_output_nusd",
    "cost_total_nusd",
    *UNPRICED_COLUMNS.values(),
    "duration_count",
    "duration_sum_us",
    "ttft_count",
    "ttft_sum_us",
    *(f"duration_b{i}" for i in range(_NB)),
    *(f"ttft_b{i}" for i in range(_NB)),
    # The events with a duration, again: the numerators and the denominator of a rate
    # (tokens/s, $/min), so a rate covers only the events it can. Kept apart from
    # duration_count/duration_sum_us because rows made before these columns existed
    # have 0 here: their events are not timed for rates, rather than timed wrongly.
    "timed_requests",
    "timed_tokens",
    "timed_cost_nusd",
    "timed_duration_us",
)
_IDX = {name: i for i, name in enumerate(VALUE_COLUMNS)}
REQUESTS = _IDX["requests"]
TOKEN_COLUMNS: tuple[int, ...] = tuple(_IDX[f] for f in TOKEN_FIELDS)
COUNT_COLUMNS: tuple[int, ...] = tuple(_IDX[f] for f in COUNT_FIELDS)
_USAGE_COLUMNS: tuple[int, ...] = tuple(_IDX[f] for f in USAGE_FIELDS)
_usage_of = attrgetter(*USAGE_FIELDS)
REASON_COLUMNS: dict[str, int] = {r: _IDX[c] for r, c in UNPRICED_COLUMNS.items()}
COST_INPUT = _IDX["cost_input_nusd"]
COST_OUTPUT = _IDX["cost_output_nusd"]
COST_TOTAL = _IDX["cost_total_nusd"]
UNPRICED = _IDX["unpriced"]
DUR_COUNT = _IDX["duration_count"]
DUR_SUM_US = _IDX["duration_sum_us"]
TTFT_COUNT = _IDX["ttft_count"]
TTFT_SUM_US = _IDX["ttft_sum_us"]
DUR_BUCKETS: tuple[int, ...] = tuple(_IDX[f"duration_b{i}"] for i in range(_NB))
TTFT_BUCKETS: tuple[int, ...] = tuple(_IDX[f"ttft_b{i}"] for i in range(_NB))
TIMED_REQUESTS = _IDX["timed_requests"]
TIMED_TOKENS = _IDX["timed_tokens"]
TIMED_COST = _IDX["timed_cost_nusd"]
TIMED_DURATION_US = _IDX["timed_duration_us"]
# Which columns hold money or milliseconds (floats); the rest are integer counts.
FLOAT_COLUMNS = frozenset(
    ("cost_input", "cost_output", "cost_total", "duration_sum_ms", "ttft_sum_ms")
)

RollupKey = tuple[str, ...]
Delta = list[int]


def rollup_key(e: UsageEvent) -> RollupKey:
    return (
        e.service,
        e.provider,
        e.model,
        e.operation,
        e.status,
        e.level,
        e.tenant or "",
        e.agent or "",
        e.tool or "",
        e.task or "",
        e.node or "",
        e.key or "",
    )


def aggregate(priced: Iterable[tuple[UsageEvent, Cost]]) -> dict[RollupKey, Delta]:
    """Sum events per rollup key; buckets are per-bucket (not cumulative) counts."""
    return _aggregate(priced, None)


# Time-bucket widths in seconds, finest first; a bucket starts at a multiple of its
# width in UTC epoch seconds, so a day bucket is a UTC day.
STEPS: dict[str, int] = {"1m": 60, "1h": 3600, "1d": 86400}

# (step seconds, bucket start, *rollup key)
BucketKey = tuple[Any, ...]


def aggregate_timed(
    priced: Iterable[tuple[UsageEvent, Cost]],
) -> tuple[dict[RollupKey, Delta], dict[BucketKey, Delta]]:
    """The rollup deltas, and the same sums per time bucket of every step.

    Events are summed once per (minute, key); the wider buckets and the untimed
    rollup are folded from those sums, which are far fewer than the events.
    """
    minutes = _aggregate(priced, 60)
    width = len(VALUE_COLUMNS)
    rollup: dict[RollupKey, Delta] = {}
    buckets: dict[BucketKey, Delta] = {}
    for mkey, v in minutes.items():
        minute, key = mkey[0], mkey[1:]
        buckets[(60, *mkey)] = v
        targets = [rollup.setdefault(key, [0] * width)]
        for step in (3600, 86400):
            targets.append(buckets.setdefault((step, minute - minute % step, *key), [0] * width))
        for t in targets:
            for i, x in enumerate(v):
                if x:
                    t[i] += x
    return rollup, buckets


def _aggregate(priced: Iterable[tuple[UsageEvent, Cost]], step: int | None) -> dict[Any, Delta]:
    out: dict[Any, Delta] = {}
    # Each key's usage tuples, summed column-wise once at the end: a Python loop over
    # the usage fields per event cost more than the rest of the sums together.
    usage: dict[Any, list[tuple[int, ...]]] = {}
    width = len(VALUE_COLUMNS)
    for e, cost in priced:
        key: Any = rollup_key(e)
        if step is not None:
            key = (int(e.timestamp // step) * step, *key)
        v = out.get(key)
        if v is None:
            v = out[key] = [0] * width
            usage[key] = []
        v[0] += 1
        usage[key].append(_usage_of(e))
        ci = round(cost.input * NANO)
        co = round(cost.output * NANO)
        v[COST_INPUT] += ci
        v[COST_OUTPUT] += co
        v[COST_TOTAL] += ci + co
        reason = cost.reason
        if reason:
            v[REASON_COLUMNS[reason]] += 1
        d = e.duration_ms
        if d is not None:
            us = round(d * 1000)
            v[DUR_COUNT] += 1
            v[DUR_SUM_US] += us
            v[DUR_BUCKETS[bisect_left(_BUCKETS_MS, d)]] += 1
            v[TIMED_REQUESTS] += 1
            v[TIMED_TOKENS] += e.input_tokens + e.output_tokens
            v[TIMED_COST] += ci + co
            v[TIMED_DURATION_US] += us
        t = e.ttft_ms
        if t is not None:
            v[TTFT_COUNT] += 1
            v[TTFT_SUM_US] += round(t * 1000)
            v[TTFT_BUCKETS[bisect_left(_BUCKETS_MS, t)]] += 1
    for key, rows in usage.items():
        v = out[key]
        for i, n in zip(_USAGE_COLUMNS, map(sum, zip(*rows, strict=True)), strict=True):
            v[i] += n
    return out
