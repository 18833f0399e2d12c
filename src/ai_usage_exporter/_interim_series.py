"""INTERIM: timeseries and report routes computed by scanning the events table.

Stands in for the time-bucket rollups and the report API (the reports work) so the
dashboard can be built and tested against the same HTTP contract before those land.
It is slow on large ledgers by design (a scan per request); drop this module and
its line in app.py when the real routes exist.
"""

from __future__ import annotations

import csv
import io
import math
import time
from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .events import TOKEN_FIELDS
from .ledger.base import q
from .rollup import BUCKETS_SECONDS

STEPS = {"1m": 60, "1h": 3600, "1d": 86400}
UNITS = {"cost": "usd", "tokens": "tokens", "requests": "requests", "errors": "requests",
         "duration": "ms"}  # fmt: skip
BY: dict[str, tuple[str, ...]] = {
    "service": ("service",),
    "model": ("provider", "model"),
    "agent": ("agent",),
    "tenant": ("tenant",),
    "tool": ("tool",),
}
STATS = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
REPORTS: dict[str, tuple[str, ...]] = {
    "daily": ("day",),
    "services": ("service",),
    "models": ("provider", "model"),
    "agents": ("agent",),
    "tenants": ("tenant",),
    "queries": ("query_id",),
}
_COLS = ("ts", "status", "service", "provider", "model", "agent", "tenant", "tool", "query_id",
         *TOKEN_FIELDS, "cost_total", "duration_ms")  # fmt: skip
_I = {c: i for i, c in enumerate(_COLS)}
_BOUNDS_MS = tuple(b * 1000.0 for b in BUCKETS_SECONDS)


class _ParamError(ValueError):
    pass


def _time(raw: str, name: str) -> float:
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _ParamError(f"{name} must be RFC 3339 or epoch seconds, got {raw!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _one(
    request: Request, name: str, default: str | None, allowed: Sequence[str] | None
) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise _ParamError(f"give {name} once, got {', '.join(map(repr, values))}")
    value = values[0] if values else default
    if value is not None and allowed is not None and value not in allowed:
        raise _ParamError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _scan(ledger: Any, since: float, until: float) -> list[tuple[Any, ...]]:
    ph = ledger.placeholder
    with ledger._read_lock:
        cur = ledger._read_conn().cursor()
        cur.execute(
            f"SELECT {', '.join(q(c) for c in _COLS)} FROM events WHERE ts >= {ph} AND ts < {ph}",
            (since, until),
        )
        rows: list[tuple[Any, ...]] = cur.fetchall()
    return rows


def _quantile(counts: list[int], phi: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    rank = phi * total
    seen = 0
    for i, n in enumerate(counts):
        if seen + n >= rank and n:
            lo = _BOUNDS_MS[i - 1] if i else 0.0
            if i >= len(_BOUNDS_MS):
                return _BOUNDS_MS[-1]
            return lo + (_BOUNDS_MS[i] - lo) * (rank - seen) / n
        seen += n
    return _BOUNDS_MS[-1]


def build_series(
    rows: Sequence[tuple[Any, ...]],
    *,
    metric: str,
    by: str | None,
    step: int,
    start: float,
    end: float,
    stat: str | None,
    limit: int,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Bucket rows into per-key series over every step from `start` to `end` (pure)."""
    first = int(start // step * step)
    timestamps = list(range(first, int(math.ceil(end / step) * step), step))
    n = len(timestamps)
    if metric == "tokens" and by == "type":
        out: list[dict[str, Any]] = []
        for f in TOKEN_FIELDS:
            counts = [0] * n
            i = _I[f]
            for r in rows:
                counts[int((r[0] - first) // step)] += r[i]
            out.append({"key": f, "labels": {"type": f.removesuffix("_tokens")}, "values": counts})
        return timestamps, out
    dims = BY[by] if by else ()
    acc: dict[tuple[str, ...], list[Any]] = {}
    for r in rows:
        key = tuple(r[_I[d]] or "" for d in dims)
        slot = acc.get(key)
        if slot is None:
            slot = acc[key] = (
                [[0] * (len(_BOUNDS_MS) + 1) for _ in range(n)]
                if metric == "duration" and stat != "avg"
                else [[0.0, 0] for _ in range(n)]
                if metric == "duration"
                else [0.0] * n
            )
        b = int((r[0] - first) // step)
        if metric == "duration":
            d = r[_I["duration_ms"]]
            if d is None:
                continue
            if stat == "avg":
                slot[b][0] += d
                slot[b][1] += 1
            else:
                slot[b][bisect_left(_BOUNDS_MS, d)] += 1
        elif metric == "cost":
            slot[b] += r[_I["cost_total"]]
        elif metric == "tokens":
            slot[b] += r[_I["input_tokens"]] + r[_I["output_tokens"]]
        elif metric == "requests":
            slot[b] += 1
        elif r[_I["status"]] == "error":
            slot[b] += 1
    series: list[dict[str, Any]] = []
    for k, slot in acc.items():
        if metric == "duration":
            values: list[Any] = (
                [s / c if c else None for s, c in slot]
                if stat == "avg"
                else [_quantile(h, STATS[stat or "p95"]) for h in slot]
            )
            weight = float(sum(1 for v in values if v is not None))
        else:
            values = [round(v, 9) if metric == "cost" else int(v) for v in slot]
            weight = float(sum(values))
        series.append(
            {
                "key": "/".join(k) if dims else "total",
                "labels": dict(zip(dims, k, strict=True)),
                "values": values,
                "_w": weight,
            }
        )
    series.sort(key=lambda s: (-s["_w"], s["key"]))
    for s in series:
        del s["_w"]
    if len(series) > limit and metric != "duration":
        rest = series[limit - 1 :]
        other = [sum(s["values"][j] for s in rest) for j in range(n)]
        series = [*series[: limit - 1], {"key": "other", "labels": {}, "values": other}]
    return timestamps, series[:limit]


def build_report(rows: Sequence[tuple[Any, ...]], name: str) -> list[dict[str, Any]]:
    """Sums per report key over the scanned rows (pure)."""
    dims = REPORTS[name]
    acc: dict[tuple[str, ...], list[float]] = {}
    for r in rows:
        if name == "daily":
            key: tuple[str, ...] = (datetime.fromtimestamp(r[0], UTC).date().isoformat(),)
        else:
            key = tuple(r[_I[d]] or "" for d in dims)
        a = acc.setdefault(key, [0, 0, 0, 0, 0.0, 0.0, 0])
        a[0] += 1
        a[1] += r[_I["status"]] == "error"
        a[2] += r[_I["input_tokens"]]
        a[3] += r[_I["output_tokens"]]
        a[4] += r[_I["cost_total"]]
        if r[_I["duration_ms"]] is not None:
            a[5] += r[_I["duration_ms"]]
            a[6] += 1
    out = []
    for key in sorted(acc, key=lambda k: k if name == "daily" else (-acc[k][0], k)):
        a = acc[key]
        out.append(
            {
                **dict(zip(dims, key, strict=True)),
                "requests": int(a[0]),
                "errors": int(a[1]),
                "input_tokens": int(a[2]),
                "output_tokens": int(a[3]),
                "cost_usd": round(a[4], 9),
                "average_duration_ms": a[5] / a[6] if a[6] else None,
            }
        )
    return out


def _error(message: str) -> Response:
    return Response(
        orjson.dumps({"error": {"message": message}}),
        status_code=400,
        media_type="application/json",
    )


def interim_routes(recorder: Any) -> list[Route]:
    """The timeseries and report routes over `recorder.ledger`, by scanning events."""

    async def timeseries(request: Request) -> Response:
        try:
            metric = _one(request, "metric", None, tuple(UNITS))
            if metric is None:
                raise _ParamError(f"metric is required: one of {', '.join(UNITS)}")
            by = _one(request, "by", None, (*BY, "type"))
            if by == "type" and metric != "tokens":
                raise _ParamError(f"by=type is for metric=tokens only, got metric={metric!r}")
            step_name = _one(request, "step", "1m", tuple(STEPS)) or "1m"
            stat = _one(request, "stat", "p95" if metric == "duration" else None,
                        (*STATS, "avg"))  # fmt: skip
            if metric != "duration":
                stat = None
            raw_limit = _one(request, "limit", "10", None) or "10"
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
                raise _ParamError(f"limit must be an integer from 1 to 100, got {raw_limit!r}")
            now = time.time()
            raw_to = _one(request, "to", None, None)
            raw_from = _one(request, "from", None, None)
            end = _time(raw_to, "to") if raw_to else now
            start = _time(raw_from, "from") if raw_from else end - 3600
            step = STEPS[step_name]
            if start >= end:
                raise _ParamError(f"from must be before to, got from={start} to={end}")
            if (end - start) / step > 5000:
                raise _ParamError(
                    f"from..to spans more than 5000 steps of {step_name}; use a larger step"
                )
        except _ParamError as exc:
            return _error(str(exc))
        first = start // step * step
        rows = await run_in_threadpool(_scan, recorder.ledger, first, end)
        ts, series = build_series(
            rows, metric=metric, by=by, step=step, start=start, end=end, stat=stat,
            limit=int(raw_limit),
        )  # fmt: skip
        body = {
            "metric": metric,
            "by": by,
            "step": step_name,
            "stat": stat,
            "unit": UNITS[metric],
            "from": first,
            "to": end,
            "timestamps": ts,
            "series": series,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def report(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            if name not in REPORTS:
                raise _ParamError(f"unknown report {name!r}; use one of {', '.join(REPORTS)}")
            fmt = _one(request, "format", "json", ("json", "csv")) or "json"
            raw_since = _one(request, "since", None, None)
            raw_until = _one(request, "until", None, None)
            since = _time(raw_since, "since") if raw_since else 0.0
            until = _time(raw_until, "until") if raw_until else time.time() + 3600
        except _ParamError as exc:
            return _error(str(exc))
        rows = build_report(await run_in_threadpool(_scan, recorder.ledger, since, until), name)
        if fmt == "json":
            body = {"report": name, "since": raw_since, "until": raw_until, "rows": rows}
            return Response(orjson.dumps(body), media_type="application/json")
        buf = io.StringIO()
        columns = (*REPORTS[name], "requests", "errors", "input_tokens", "output_tokens",
                   "cost_usd", "average_duration_ms")  # fmt: skip
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )

    return [
        Route("/api/metrics/timeseries", timeseries, methods=["GET"]),
        Route("/api/reports/{name}", report, methods=["GET"]),
    ]
