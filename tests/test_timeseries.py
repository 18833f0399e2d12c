"""Time buckets in the ledger and GET /api/metrics/timeseries, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_ledger import ledger_url  # noqa: F401 - the sqlite/postgresql fixture

from _server import serve_app
from ai_usage_exporter import Recorder, UsageEvent
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.core.rollup import KEY_FIELDS
from ai_usage_exporter.core.timeseries import ParamError, build, parse_query, quantile
from ai_usage_exporter.ledger import open_ledger
from ai_usage_exporter.ledger.buckets import TABLE
from ai_usage_exporter.server import create_app

T0 = 1_790_000_000 - 1_790_000_000 % 86400  # a UTC midnight


def _ev(ts: float, **kw: Any) -> tuple[UsageEvent, Cost]:
    fields: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 10,
        "duration_ms": 200.0,
        "timestamp": ts,
    }
    fields.update(kw)
    e = UsageEvent(**fields)
    return e, Cost(e.input_tokens * 1e-7, e.output_tokens * 4e-7, 0.0, "genai-prices")


EVENTS = [
    _ev(T0 + 5),
    _ev(T0 + 30, model="gpt-4o", input_tokens=1000, output_tokens=100, duration_ms=800.0),
    _ev(T0 + 61, agent="planner", cached_input_tokens=50),
    _ev(T0 + 3600 + 1, status="error", level="error", duration_ms=None),
    _ev(T0 + 86400 + 7, provider="anthropic", model="claude", service="bot"),
]


def _query(**params: str) -> Any:
    return parse_query({k: [v] for k, v in params.items()}, now=T0 + 2 * 86400)


def _rows(ledger: Any, query: Any) -> list[tuple[Any, ...]]:
    return list(
        ledger.bucket_sums(
            query.step_seconds, query.start, query.end, query.group_by, query.filters
        )
    )


def test_buckets_per_step_and_timeseries_body(ledger_url: str) -> None:  # noqa: F811
    ledger = open_ledger(ledger_url)
    try:
        ledger.write(EVENTS[:3], T0)
        ledger.write(EVENTS[3:], T0)
        q = _query(metric="requests", step="1m", **{"from": str(T0), "to": str(T0 + 180)})
        body = build(q, _rows(ledger, q))
        assert body == {
            "metric": "requests",
            "by": None,
            "step": "1m",
            "stat": None,
            "unit": "requests",
            "from": T0,
            "to": T0 + 180,
            "timestamps": [T0, T0 + 60, T0 + 120],
            "series": [{"key": "total", "labels": {}, "values": [2, 1, 0]}],
        }
        q = _query(metric="cost", by="model", step="1h", **{"from": str(T0), "to": str(T0 + 7200)})
        body = build(q, _rows(ledger, q))
        assert body["timestamps"] == [T0, T0 + 3600]
        assert body["series"] == [
            {
                "key": "openai/gpt-4o",
                "labels": {"provider": "openai", "model": "gpt-4o"},
                "values": [pytest.approx(1000e-7 + 100 * 4e-7), 0.0],
            },
            {
                "key": "openai/gpt-4o-mini",
                "labels": {"provider": "openai", "model": "gpt-4o-mini"},
                "values": [pytest.approx(2 * 140e-7), pytest.approx(140e-7)],
            },
        ]
        q = _query(
            metric="tokens", by="type", step="1d", **{"from": str(T0), "to": str(T0 + 2 * 86400)}
        )
        body = build(q, _rows(ledger, q))
        assert body["series"] == [
            {"key": "input", "labels": {"type": "input"}, "values": [1300, 100]},
            {"key": "output", "labels": {"type": "output"}, "values": [130, 10]},
            {"key": "cached_input", "labels": {"type": "cached_input"}, "values": [50, 0]},
        ]
        q = _query(
            metric="errors", by="service", step="1d", **{"from": str(T0), "to": str(T0 + 2 * 86400)}
        )
        assert build(q, _rows(ledger, q))["series"] == [
            {"key": "default", "labels": {"service": "default"}, "values": [1, 0]}
        ]
        q = _query(
            metric="requests",
            by="agent",
            step="1d",
            limit="1",
            **{"from": str(T0), "to": str(T0 + 2 * 86400)},
        )
        assert build(q, _rows(ledger, q))["series"] == [
            {"key": "(none)", "labels": {"agent": ""}, "values": [3, 1]},
            {"key": "other", "labels": {}, "values": [1, 0]},
        ]
        # 200 ms twice and 800 ms once in the first minute: buckets (100,250] and (500,1000].
        q = _query(metric="duration", step="1m", **{"from": str(T0), "to": str(T0 + 120)})
        p95 = build(q, _rows(ledger, q))["series"][0]["values"]
        assert p95 == [950.0, 242.5]
        q = _query(
            metric="duration", stat="avg", step="1m", **{"from": str(T0), "to": str(T0 + 180)}
        )
        assert build(q, _rows(ledger, q))["series"][0]["values"] == [500.0, 200.0, None]
    finally:
        ledger.close()


def test_old_ledger_gets_buckets_built_from_its_events(ledger_url: str) -> None:  # noqa: F811
    def dump(ledger: Any) -> list[tuple[Any, ...]]:
        group = ("step", "bucket", *KEY_FIELDS)
        return sorted(ledger.bucket_sums(60, 0, 2**40, group) + ledger.bucket_sums(3600, 0, 2**40, group)
                      + ledger.bucket_sums(86400, 0, 2**40, group))  # fmt: skip

    ledger = open_ledger(ledger_url)
    ledger.write(EVENTS, T0)
    live = dump(ledger)
    ledger.close()
    assert len(live) == 3 * 5  # per step, five (bucket, key) pairs
    # An older version had no bucket table at all.
    if ledger_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(ledger_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {TABLE} CASCADE")
    else:
        with sqlite3.connect(ledger_url) as lite:
            lite.execute(f"DROP TABLE {TABLE}")
    ledger = open_ledger(ledger_url)
    try:
        assert dump(ledger) == live
    finally:
        ledger.close()


def test_quantile_matches_prometheus_interpolation() -> None:
    assert quantile(0.25, [0, 2, 2], [10.0, 20.0]) == 15.0
    assert quantile(0.99, [0, 0, 5], [10.0, 20.0]) == 20.0  # +Inf bucket: the last bound
    assert quantile(0.25, [4, 0, 0], [10.0, 20.0]) == 2.5


@pytest.mark.parametrize(
    ("params", "name", "value"),
    [
        ({"metric": "latency"}, "metric", "latency"),
        ({"by": "user"}, "by", "user"),
        ({"by": "type", "metric": "cost"}, "by", "type"),
        ({"step": "5m"}, "step", "5m"),
        ({"stat": "p95", "metric": "cost"}, "stat", "p95"),
        ({"metric": "duration", "stat": "p42"}, "stat", "p42"),
        ({"from": "yesterday"}, "from", "yesterday"),
        ({"from": str(T0 + 10), "to": str(T0)}, "from", str(T0 + 10)),
        ({"limit": "0"}, "limit", "0"),
        ({"step": "1m", "from": "0"}, "step", "1m"),
        ({"colour": "red"}, "colour", "red"),
    ],
)
def test_bad_parameters_name_themselves(params: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ParamError) as info:
        _query(**params)
    assert (info.value.name, info.value.value) == (name, value)


def test_http_route_defaults_errors_and_read_token(tmp_path: Path) -> None:
    import time

    now = time.time()
    rec = Recorder(str(tmp_path / "l.db"))
    rec.record_many(
        [{"provider": "openai", "model": "m", "input_tokens": 7, "timestamp": now - 30}]
    )
    app = create_app(rec, write_tokens=["w"], read_tokens=["r"], close_recorder=True)
    with serve_app(app) as url:
        ts = f"{url}/api/metrics/timeseries"
        assert httpx.get(ts).status_code == 401
        auth = {"Authorization": "Bearer r"}
        body = httpx.get(ts, params={"metric": "tokens"}, headers=auth).json()
        assert (body["step"], len(body["timestamps"])) in (("1m", 60), ("1m", 61))
        assert body["to"] - body["from"] == 60 * len(body["timestamps"])
        assert sum(body["series"][0]["values"]) == 7
        r = httpx.get(ts, params={"step": "2m"}, headers=auth)
        assert r.status_code == 400
        assert r.json()["error"]["details"] == [
            {
                "index": -1,
                "field": "step",
                "value": "2m",
                "message": "step: must be one of 1m, 1h, 1d, got '2m'",
            }
        ]
