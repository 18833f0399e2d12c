"""The time-bucket rollup: the rollup's sums per key and per minute, hour and day.

Maintained in the same transaction as the events (see `SQLLedger.write`), so a
report or a chart over months reads a few thousand bucket rows instead of
millions of events. The key is (step, bucket, *KEY_FIELDS): a column added to
KEY_FIELDS (a sidecar's `instance`, say) joins the key here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..events import TOKEN_FIELDS
from ..rollup import BUCKETS_MS, HISTOGRAM_BUCKETS, KEY_FIELDS, NANO, STEPS, VALUE_COLUMNS

TABLE = "rollup_buckets"
BUCKET_KEY: tuple[str, ...] = ("step", "bucket", *KEY_FIELDS)


def q(name: str) -> str:
    return f'"{name}"'


VIEW_DAILY = "usage_daily"


def schema(int_type: str) -> list[str]:
    key_cols = ",\n  ".join(
        [f"step {int_type} NOT NULL", f"bucket {int_type} NOT NULL"]
        + [f"{q(c)} TEXT NOT NULL" for c in KEY_FIELDS]
    )
    value_cols = ",\n  ".join(f"{q(c)} {int_type} NOT NULL DEFAULT 0" for c in VALUE_COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {TABLE} (\n  {key_cols},\n  {value_cols},\n"
        f"  PRIMARY KEY ({', '.join(q(c) for c in BUCKET_KEY)})\n)",
        # For people writing SQL (docs/sql.md): the day buckets in plain units. Made
        # anew at every open, so it follows columns a newer version adds.
        f"DROP VIEW IF EXISTS {VIEW_DAILY}",
        f"CREATE VIEW {VIEW_DAILY} AS SELECT bucket AS day_start, "
        + ", ".join(q(c) for c in KEY_FIELDS)
        + ", requests, "
        + ", ".join(q(t) for t in TOKEN_FIELDS)
        + f", input_tokens + output_tokens AS total_tokens, cost_total_nusd / {NANO}.0 AS cost_usd, "
        f"duration_count, duration_sum_us / 1000.0 AS duration_sum_ms FROM {TABLE} WHERE step = 86400",
    ]


def upsert_sql(placeholder: str) -> str:
    cols = (*BUCKET_KEY, *VALUE_COLUMNS)
    updates = ", ".join(f"{q(c)} = {TABLE}.{q(c)} + excluded.{q(c)}" for c in VALUE_COLUMNS)
    return (
        f"INSERT INTO {TABLE} ({', '.join(q(c) for c in cols)}) "
        f"VALUES ({', '.join([placeholder] * len(cols))}) "
        f"ON CONFLICT ({', '.join(q(c) for c in BUCKET_KEY)}) DO UPDATE SET {updates}"
    )


def backfill_sql(step: int, floor: str, int_cast: str, where: str = "") -> str:
    """Bucket rows of `step` built from the events table with the writer's arithmetic.

    `floor` formats an expression rounding down (a dialect word); `int_cast` casts
    to the integer type. Costs are rounded per event to whole nanodollars before
    summing, as `rollup.aggregate` does, so rebuilt sums equal live ones.
    """
    bucket = f"{floor.format(f'ts / {step}')} * {step}"
    keys = [f"COALESCE({q(c)}, '')" for c in KEY_FIELDS]
    dur_edges = _hist_cases("duration_ms")
    ttft_edges = _hist_cases("ttft_ms")
    cost = "CAST(round({0} * " + str(NANO) + ") AS " + int_cast + ")"
    values = [
        "count(*)",
        *(f"sum({q(t)})" for t in TOKEN_FIELDS),
        f"sum({cost.format('cost_input')})",
        f"sum({cost.format('cost_output')})",
        f"sum({cost.format('cost_input')} + {cost.format('cost_output')})",
        "sum(CASE WHEN cost_source = 'unpriced' THEN 1 ELSE 0 END)",
        "count(duration_ms)",
        f"COALESCE(sum(CAST(round(duration_ms * 1000) AS {int_cast})), 0)",
        "count(ttft_ms)",
        f"COALESCE(sum(CAST(round(ttft_ms * 1000) AS {int_cast})), 0)",
        *dur_edges,
        *ttft_edges,
    ]
    assert len(values) == len(VALUE_COLUMNS)
    cols = ", ".join(q(c) for c in (*BUCKET_KEY, *VALUE_COLUMNS))
    group = ", ".join(["1", "2", *(str(i + 3) for i in range(len(KEY_FIELDS)))])
    return (
        f"INSERT INTO {TABLE} ({cols}) SELECT {step}, {bucket}, {', '.join(keys)}, "
        f"{', '.join(values)} FROM events {where} GROUP BY {group}"
    )


def _hist_cases(column: str) -> list[str]:
    # bisect_left: a value lands in the first bucket whose bound is >= it.
    out = []
    for i in range(HISTOGRAM_BUCKETS):
        lo = f"{q(column)} > {BUCKETS_MS[i - 1]!r}" if i > 0 else None
        hi = f"{q(column)} <= {BUCKETS_MS[i]!r}" if i < HISTOGRAM_BUCKETS - 1 else None
        cond = " AND ".join(c for c in (lo, hi) if c) or f"{q(column)} IS NOT NULL"
        out.append(f"sum(CASE WHEN {cond} THEN 1 ELSE 0 END)")
    return out


def sums_sql(
    placeholder: str, group_by: Sequence[str], filters: Mapping[str, str]
) -> tuple[str, int]:
    """SELECT the summed value columns per `group_by` over one step and a time range.

    Parameters in order: step, bucket start (inclusive), bucket end (exclusive), then
    one per filter. Returns the SQL and the number of group columns leading each row.
    """
    ph = placeholder
    group = [c if c == "bucket" else q(c) for c in group_by]
    sums = ", ".join(f"sum({q(c)})" for c in VALUE_COLUMNS)
    where = [f"step = {ph}", f"bucket >= {ph}", f"bucket < {ph}"]
    where += [f"{q(k)} = {ph}" for k in filters]
    select = ", ".join([*group, sums])
    sql = f"SELECT {select} FROM {TABLE} WHERE {' AND '.join(where)}"
    if group:
        sql += f" GROUP BY {', '.join(group)}"
    return sql, len(group)


def pick_step(since: float, until: float) -> int:
    """The widest step whose buckets tile [since, until) exactly."""
    for step in sorted(STEPS.values(), reverse=True):
        if since % step == 0 and until % step == 0:
            return step
    return 60


Row = tuple[Any, ...]
