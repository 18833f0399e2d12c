"""The time-bucket rollup: the rollup's sums per key and per minute, hour and day.

Maintained in the same transaction as the events (see `SQLLedger.write`), so a
report or a chart over months reads a few thousand bucket rows instead of
millions of events. Like the rollup, its rows are per instance: the key is
(instance, step, bucket, *KEY_FIELDS), so a column added to KEY_FIELDS joins the
key here too, and sidecars sharing one PostgreSQL database each write their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ai_usage_exporter.core.rollup import (
    BUCKETS_MS,
    HISTOGRAM_BUCKETS,
    INSTANCE,
    KEY_FIELDS,
    NANO,
    STEPS,
    UNPRICED_COLUMNS,
    VALUE_COLUMNS,
)
from ai_usage_exporter.core.shapes import COUNT_FIELDS, TOKEN_FIELDS

TABLE = "rollup_buckets"
# The key after `instance` (see PER_INSTANCE_TABLES); step and bucket are integers.
BUCKET_KEY: tuple[str, ...] = ("step", "bucket", *KEY_FIELDS)
INTEGER_KEYS = frozenset(("step", "bucket"))
# The primary key of a clustered bucket table (SQLite's, WITHOUT ROWID): a time range
# of one step is one stretch of the table, whichever instances it covers.
CLUSTERED_KEY: tuple[str, ...] = ("step", "bucket", INSTANCE, *KEY_FIELDS)
# The primary key leads with the instance, so reads over every instance (the fleet,
# reports from the CLI) and retention find a time range through this index.
RANGE_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_range ON {TABLE} (step, bucket)"


def q(name: str) -> str:
    return f'"{name}"'


VIEW_DAILY = "usage_daily"
DROP_VIEW = f"DROP VIEW IF EXISTS {VIEW_DAILY}"


def create_view() -> str:
    """For people writing SQL (docs/sql.md): the day buckets in plain units.

    Made anew at every open, so it follows columns a newer version adds.
    """
    return (
        f"CREATE VIEW {VIEW_DAILY} AS SELECT bucket AS day_start, {q(INSTANCE)}, "
        + ", ".join(q(c) for c in KEY_FIELDS)
        + ", requests, "
        + ", ".join(q(t) for t in (*TOKEN_FIELDS, *COUNT_FIELDS))
        + f", input_tokens + output_tokens AS total_tokens, cost_total_nusd / {NANO}.0 AS cost_usd, "
        f"duration_count, duration_sum_us / 1000.0 AS duration_sum_ms FROM {TABLE} WHERE step = 86400"
    )


def upsert_sql(placeholder: str) -> str:
    """Add one instance's deltas: parameters are instance, step, bucket, key, values."""
    key = (INSTANCE, *BUCKET_KEY)
    cols = (*key, *VALUE_COLUMNS)
    updates = ", ".join(f"{q(c)} = {TABLE}.{q(c)} + excluded.{q(c)}" for c in VALUE_COLUMNS)
    return (
        f"INSERT INTO {TABLE} ({', '.join(q(c) for c in cols)}) "
        f"VALUES ({', '.join([placeholder] * len(cols))}) "
        f"ON CONFLICT ({', '.join(q(c) for c in key)}) DO UPDATE SET {updates}"
    )


def backfill_sql(step: int, floor: str, int_cast: str, instance: str) -> str:
    """Bucket rows of `step` built from the events table with the writer's arithmetic.

    `floor` formats an expression rounding down (a dialect word); `int_cast` casts
    to the integer type; `instance` is the SQL expression giving an event's instance
    (see `SQLLedger._backfill_buckets`). Costs are rounded per event to whole
    nanodollars before summing, as `rollup.aggregate` does, so rebuilt sums equal
    live ones.
    """
    bucket = f"{floor.format(f'ts / {step}')} * {step}"
    keys = [f"COALESCE({q(c)}, '')" for c in KEY_FIELDS]
    dur_edges = _hist_cases("duration_ms")
    ttft_edges = _hist_cases("ttft_ms")
    cost = "CAST(round({0} * " + str(NANO) + ") AS " + int_cast + ")"
    values = [
        "count(*)",
        *(f"sum({q(t)})" for t in TOKEN_FIELDS),
        *(f"sum({q(t)})" for t in COUNT_FIELDS),
        f"sum({cost.format('cost_input')})",
        f"sum({cost.format('cost_output')})",
        f"sum({cost.format('cost_input')} + {cost.format('cost_output')})",
        # Rows from before cost reasons have reason '': unpriced is told by the source.
        *(
            "sum(CASE WHEN cost_source = 'unpriced' THEN 1 ELSE 0 END)"
            if reason == "unknown_model"
            else f"sum(CASE WHEN cost_reason = '{reason}' THEN 1 ELSE 0 END)"
            for reason in UNPRICED_COLUMNS
        ),
        "count(duration_ms)",
        f"COALESCE(sum(CAST(round(duration_ms * 1000) AS {int_cast})), 0)",
        "count(ttft_ms)",
        f"COALESCE(sum(CAST(round(ttft_ms * 1000) AS {int_cast})), 0)",
        *dur_edges,
        *ttft_edges,
    ]
    assert len(values) == len(VALUE_COLUMNS)
    cols = ", ".join(q(c) for c in (INSTANCE, *BUCKET_KEY, *VALUE_COLUMNS))
    group = ", ".join(str(i + 1) for i in range(3 + len(KEY_FIELDS)))
    return (
        f"INSERT INTO {TABLE} ({cols}) SELECT {instance}, {step}, {bucket}, {', '.join(keys)}, "
        f"{', '.join(values)} FROM events GROUP BY {group}"
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
    placeholder: str,
    group_by: Sequence[str],
    filters: Mapping[str, str],
    instance_where: str,
    values: Sequence[str] = VALUE_COLUMNS,
) -> tuple[str, int]:
    """SELECT the summed `values` columns per `group_by` over one step and a time range.

    Parameters in order: step, bucket start (inclusive), bucket end (exclusive), those
    of `instance_where` (a condition on the instance), then one per filter. Returns
    the SQL and the number of group columns leading each row. Summing only the columns
    a reader needs matters: a report needs 11 of the 48, and each sum costs.
    """
    ph = placeholder
    group = [c if c == "bucket" else q(c) for c in group_by]
    sums = ", ".join(f"sum({q(c)})" for c in values)
    where = [f"step = {ph}", f"bucket >= {ph}", f"bucket < {ph}", instance_where]
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


# meta key (formatted with the step) holding the time before which retention deleted
# that step's buckets; readers then use the next wider step there.
PRUNED_META = "buckets_pruned_before:{}"


Row = tuple[Any, ...]
