"""Rollup deltas: an event batch summed per attribution key (pure).

The ledger adds these deltas to its rollup table in the same transaction that stores
the events, and the metric state adds the same deltas to its counters; at start the
state is rebuilt from the rollup rows instead of a scan of every event.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from .events import TOKEN_FIELDS, UsageEvent
from .pricing import Cost

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
)

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
VALUE_COLUMNS: tuple[str, ...] = (
    "requests",
    *TOKEN_FIELDS,
    "cost_input_nusd",
    "cost_output_nusd",
    "cost_total_nusd",
    "unpriced",
    "duration_count",
    "duration_sum_us",
    "ttft_count",
    "ttft_sum_us",
    *(f"duration_b{i}" for i in range(_NB)),
    *(f"ttft_b{i}" for i in range(_NB)),
)
_IDX = {name: i for i, name in enumerate(VALUE_COLUMNS)}
REQUESTS = _IDX["requests"]
TOKEN_COLUMNS: tuple[int, ...] = tuple(_IDX[f] for f in TOKEN_FIELDS)
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
    width = len(VALUE_COLUMNS)
    for e, cost in priced:
        key: Any = rollup_key(e)
        if step is not None:
            key = (int(e.timestamp // step) * step, *key)
        v = out.get(key)
        if v is None:
            v = out[key] = [0] * width
        v[0] += 1
        v[1] += e.input_tokens
        v[2] += e.output_tokens
        v[3] += e.cached_input_tokens
        v[4] += e.cache_write_tokens
        v[5] += e.reasoning_tokens
        v[6] += e.audio_input_tokens
        v[7] += e.audio_output_tokens
        ci = round(cost.input * NANO)
        co = round(cost.output * NANO)
        v[COST_INPUT] += ci
        v[COST_OUTPUT] += co
        v[COST_TOTAL] += ci + co
        if cost.source == "unpriced":
            v[UNPRICED] += 1
        d = e.duration_ms
        if d is not None:
            v[DUR_COUNT] += 1
            v[DUR_SUM_US] += round(d * 1000)
            v[DUR_BUCKETS[bisect_left(_BUCKETS_MS, d)]] += 1
        t = e.ttft_ms
        if t is not None:
            v[TTFT_COUNT] += 1
            v[TTFT_SUM_US] += round(t * 1000)
            v[TTFT_BUCKETS[bisect_left(_BUCKETS_MS, t)]] += 1
    return out
