"""Time buckets and reports per instance: scope=instance|fleet, migration, adoption, retiring."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from test_ledger import ledger_url  # noqa: F401 - the sqlite/postgresql fixture

from _pg import fresh_schema
from _server import serve_app
from ai_usage_exporter import Recorder, UsageEvent
from ai_usage_exporter.cli.main import main
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.core.reports import REPORTS, Window, build_report, flat_rows
from ai_usage_exporter.core.rollup import (
    INSTANCE,
    KEY_FIELDS,
    RETIRED_INSTANCE,
    STEPS,
    VALUE_COLUMNS,
)
from ai_usage_exporter.ledger import Ledger, open_ledger
from ai_usage_exporter.ledger.buckets import BUCKET_KEY, INTEGER_KEYS, TABLE
from ai_usage_exporter.server import create_app

DAY = 86400
D0 = int(time.time() // DAY) * DAY - 2 * DAY  # two UTC days ago, midnight
SINCE, UNTIL = str(D0), str(D0 + 2 * DAY)

# Costs are powers of two, so sums in any order are exact.
POD_A: list[dict[str, Any]] = [
    {"provider": "openai", "model": "gpt-4o-mini", "service": "chat", "input_tokens": 100,
     "output_tokens": 10, "cost_usd": 0.5, "query_id": "q1", "agent": "planner", "task": "plan",
     "tool": "search", "workflow_id": "w1", "tenant": "acme", "duration_ms": 200.0,
     "timestamp": D0 + 3600 + 5},
    {"provider": "openai", "model": "gpt-4o", "service": "chat", "input_tokens": 30,
     "output_tokens": 3, "cost_usd": 0.25, "query_id": "q2", "status": "error",
     "duration_ms": 50.0, "timestamp": D0 + DAY + 60},
]  # fmt: skip
POD_B: list[dict[str, Any]] = [
    {"provider": "openai", "model": "gpt-4o-mini", "service": "chat", "input_tokens": 7,
     "output_tokens": 1, "cost_usd": 0.125, "query_id": "q1", "agent": "planner", "task": "plan",
     "tool": "search", "workflow_id": "w1", "duration_ms": 100.0, "timestamp": D0 + 3600 + 30},
    {"provider": "anthropic", "model": "claude", "service": "batch", "input_tokens": 1000,
     "output_tokens": 100, "cost_usd": 0.0625, "query_id": "q3", "agent": "writer",
     "tenant": "acme", "duration_ms": 1000.0, "timestamp": D0 + DAY + 7200},
]  # fmt: skip

# Per report: the columns naming a row, and the columns that add up across instances.
_ROW_KEYS = {
    "daily": ("day",),
    "queries": ("query_id",),
    "agents": ("agent", "task", "tool"),
    "models": ("provider", "model"),
    "tenants": ("tenant",),
    "services": ("service",),
    "keys": ("key",),
}
_ADDITIVE = ("requests", "inferences", "errors", "input_tokens", "output_tokens",
             "total_tokens", "cost_usd", "duration_ms")  # fmt: skip


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def _summed(bodies: list[dict[str, Any]], name: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows of several bodies of one report added up per row key (additive columns only)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for body in bodies:
        for row in flat_rows(body):
            acc = out.setdefault(tuple(row[k] for k in _ROW_KEYS[name]), {})
            for col in _ADDITIVE:
                if col in row:
                    acc[col] = acc.get(col, 0) + row[col]
    return out


def _series(body: dict[str, Any]) -> dict[str, list[Any]]:
    return {s["key"]: s["values"] for s in body["series"]}


def test_two_instances_on_postgresql_timeseries_and_reports_per_scope(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        Recorder(pg_url, CollectorRegistry(), instance="pod-a") as a,
        Recorder(pg_url, CollectorRegistry(), instance="pod-b") as b,
    ):
        a.record_many(POD_A)
        b.record_many(POD_B)
        with serve_app(create_app(a)) as url_a, serve_app(create_app(b)) as url_b:
            ts = {"metric": "tokens", "step": "1d", "from": SINCE, "to": UNTIL}
            own_a = httpx.get(f"{url_a}/api/metrics/timeseries", params=ts).json()
            own_b = httpx.get(f"{url_b}/api/metrics/timeseries", params={**ts, "scope": "instance"})
            fleet = httpx.get(f"{url_a}/api/metrics/timeseries", params={**ts, "scope": "fleet"})
            assert own_a["scope"] == "instance"
            assert _series(own_a) == {"total": [110, 33]}
            assert _series(own_b.json()) == {"total": [8, 1100]}
            assert fleet.json()["scope"] == "fleet"
            assert _series(fleet.json()) == {"total": [118, 1133]}
            by = {"metric": "cost", "by": "service", "step": "1d", "from": SINCE, "to": UNTIL}
            assert _series(httpx.get(f"{url_b}/api/metrics/timeseries", params=by).json()) == {
                "chat": [0.125, 0.0],
                "batch": [0.0, 0.0625],
            }
            fleet_by = httpx.get(
                f"{url_b}/api/metrics/timeseries", params={**by, "scope": "fleet"}
            ).json()
            assert _series(fleet_by) == {"chat": [0.625, 0.25], "batch": [0.0, 0.0625]}

            window = {"since": SINCE, "until": UNTIL, "workflow": "w1"}
            for name in REPORTS:
                per_instance = [
                    httpx.get(f"{url}/api/reports/{name}", params=window).json()
                    for url in (url_a, url_b)
                ]
                assert [(r["scope"], r["instance"]) for r in per_instance] == [
                    ("instance", "pod-a"),
                    ("instance", "pod-b"),
                ]
                whole = httpx.get(
                    f"{url_b}/api/reports/{name}", params={**window, "scope": "fleet"}
                ).json()
                assert (whole["scope"], whole["instance"]) == ("fleet", None)
                assert _summed([whole], name) == _summed(per_instance, name), name
                if name == "agents":
                    assert [len(r["steps"]) for r in (*per_instance, whole)] == [1, 1, 2]
            daily = httpx.get(
                f"{url_a}/api/reports/daily", params={**window, "scope": "fleet"}
            ).json()
            assert [(r["requests"], r["errors"], r["total_tokens"], r["cost_usd"])
                    for r in daily["rows"]] == [(2, 0, 118, 0.625), (2, 1, 1133, 0.3125)]  # fmt: skip

            for path in ("/api/metrics/timeseries", "/api/reports/daily"):
                bad = httpx.get(f"{url_a}{path}", params={"scope": "pod-b"})
                assert bad.status_code == 400
                assert bad.json()["error"]["details"] == [
                    {
                        "index": -1,
                        "field": "scope",
                        "value": "pod-b",
                        "message": "scope: must be one of instance, fleet, got 'pod-b'",
                    }
                ]

    # The CLI opens the ledger as a tool: the whole ledger unless --instance names one.
    def cli_report(*extra: str) -> list[dict[str, Any]]:
        argv = ["report", "daily", "--db", pg_url, "--format", "json", "--since", SINCE]
        assert main([*argv, "--until", UNTIL, *extra]) == 0
        rows: list[dict[str, Any]] = orjson.loads(capsys.readouterr().out)["rows"]
        return rows

    assert cli_report() == daily["rows"]
    rows_a, rows_b = cli_report("--instance", "pod-a"), cli_report("--instance", "pod-b")
    assert [r["total_tokens"] for r in rows_a] == [110, 33]
    assert [r["total_tokens"] for r in rows_b] == [8, 1100]
    assert main(["query", "--db", pg_url, "--format", "json", "--instance", "pod-b"]) == 0
    assert [c["query_id"] for c in orjson.loads(capsys.readouterr().out)] == ["q3", "q1"]
    assert main(["query", "--db", pg_url, "--format", "json"]) == 0
    assert len(orjson.loads(capsys.readouterr().out)) == 4


def _dump(ledger: Ledger, instance: str | None) -> list[tuple[Any, ...]]:
    """Every bucket row of one instance (None: all), per step, bucket and key."""
    group = ("step", "bucket", *KEY_FIELDS)
    return sorted(
        row
        for step in STEPS.values()
        for row in ledger.bucket_sums(step, 0, 2**40, group, instance=instance)
    )


def _events() -> list[tuple[UsageEvent, Cost]]:
    out = []
    for fields in (*POD_A, *POD_B):
        f = {k: v for k, v in fields.items() if k != "cost_usd"}
        e = UsageEvent(**f)
        out.append((e, Cost(0.0, fields["cost_usd"], fields["cost_usd"], "caller")))
    return out


def _execute(url: str, statements: list[str]) -> None:
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt)
    else:
        lite = sqlite3.connect(url)
        for stmt in statements:
            lite.execute(stmt)
        lite.commit()
        lite.close()


def _age(url: str, int_type: str, keep_buckets: bool) -> None:
    """Make a ledger look written by a version without instances (and without buckets)."""
    stmts = ["DROP VIEW usage_daily"]
    for table, key in (("rollup", KEY_FIELDS), (TABLE, BUCKET_KEY)):
        if table == TABLE and not keep_buckets:
            stmts.append(f"DROP TABLE {TABLE}")
            continue
        keys = ", ".join(f'"{c}" {int_type if c in INTEGER_KEYS else "TEXT"} NOT NULL' for c in key)
        values = ", ".join(f'"{c}" {int_type} NOT NULL DEFAULT 0' for c in VALUE_COLUMNS)
        cols = ", ".join(f'"{c}"' for c in (*key, *VALUE_COLUMNS))
        stmts += [
            f"CREATE TABLE old_{table} ({keys}, {values}, "
            f"PRIMARY KEY ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in key)}))",
            f"INSERT INTO old_{table} ({cols}) SELECT {cols} FROM {table}",
            f"DROP TABLE {table}",
            f"ALTER TABLE old_{table} RENAME TO {table}",
        ]
    if keep_buckets:
        # The older view reads the bucket table, which the upgrade has to rebuild.
        stmts.append(
            f"CREATE VIEW usage_daily AS SELECT bucket AS day_start, requests FROM {TABLE} "
            "WHERE step = 86400"
        )
    stmts.append(f'ALTER TABLE events DROP COLUMN "{INSTANCE}"')
    _execute(url, stmts)


@pytest.mark.parametrize("keep_buckets", [True, False], ids=["buckets-no-instance", "no-buckets"])
def test_an_old_ledgers_buckets_are_adopted_with_its_rollup(
    ledger_url: str,  # noqa: F811
    keep_buckets: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pg = ledger_url.startswith("postgresql")
    tool = open_ledger(ledger_url)
    tool.write(_events(), D0)
    before = _dump(tool, None)
    tool.close()
    assert len(before) == 3 * 4
    _age(ledger_url, "BIGINT" if pg else "INTEGER", keep_buckets)

    first = open_ledger(ledger_url, instance="pod-a")
    second = open_ledger(ledger_url, instance="pod-b") if pg else None
    try:
        assert _dump(first, "pod-a") == before
        assert _dump(first, "") == []
        assert first.instances() == {"pod-a": 4}
        if second is not None:
            assert _dump(second, "pod-b") == []
        # The rebuilt key takes the instance: the same event again adds to the same rows.
        first.write(_events()[:1], D0)
        again = _dump(first, "pod-a")
        assert len(again) == len(before)
        assert sum(r[len(BUCKET_KEY)] for r in again) == sum(r[len(BUCKET_KEY)] for r in before) + 3
        # The view was made anew, with the instance.
        view = _query(ledger_url, f'SELECT "{INSTANCE}", sum(requests) FROM usage_daily GROUP BY 1')
        assert [(r[0], int(r[1])) for r in view] == [("pod-a", 5)]
    finally:
        first.close()
        if second is not None:
            second.close()
    if pg:
        assert main(["retire-instance", "pod-a", "--db", ledger_url]) == 0
        capsys.readouterr()
        tool = open_ledger(ledger_url)
        try:
            assert _dump(tool, "pod-a") == []
            assert _dump(tool, RETIRED_INSTANCE) == again
            assert _dump(tool, None) == again
        finally:
            tool.close()


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    lite = sqlite3.connect(url)
    try:
        return [tuple(r) for r in lite.execute(sql).fetchall()]
    finally:
        lite.close()


def test_backfill_follows_retired_and_unassigned_rows(pg_url: str) -> None:
    """A fleet ledger from before buckets: each event's buckets go where its rollup row is."""
    events = _events()
    a = open_ledger(pg_url, instance="pod-a")
    b = open_ledger(pg_url, instance="pod-b")
    tool = open_ledger(pg_url)
    a.write(events[:2], D0)
    b.write(events[2:3], D0)
    tool.write(events[3:], D0)  # unassigned, like an import
    assert b.retire_instance("pod-a") == 2
    want = {inst: _dump(tool, inst) for inst in (RETIRED_INSTANCE, "pod-b", "")}
    everything = _dump(tool, None)
    for ledger in (a, b, tool):
        ledger.close()
    _execute(pg_url, ["DROP VIEW usage_daily", f"DROP TABLE {TABLE}"])

    b = open_ledger(pg_url, instance="pod-b")  # backfills, then adopts the unassigned rows
    try:
        assert _dump(b, RETIRED_INSTANCE) == want[RETIRED_INSTANCE]
        assert _dump(b, "pod-b") == sorted(want["pod-b"] + want[""])
        assert _dump(b, "") == []
        assert _dump(b, None) == everything
        assert b.instances() == {RETIRED_INSTANCE: 2, "pod-b": 2}
    finally:
        b.close()


def test_a_sqlite_sidecar_reads_its_whole_file_after_a_rename(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "one.db")
    with Recorder(path, CollectorRegistry(), instance="container-1") as r:
        r.record_many(POD_A[:1])
    with Recorder(path, CollectorRegistry(), instance="container-2") as r:
        r.record_many(POD_B[:1])
        own = r.ledger.scope_instance("instance")
        w = Window(D0, D0 + 2 * DAY)
        queries = build_report(r.ledger, "queries", w, instance=own)
        assert [(q["query_id"], q["inferences"]) for q in queries["rows"]] == [("q1", 2)]
        daily = build_report(r.ledger, "daily", w, instance=own)
        assert [row["requests"] for row in daily["rows"]] == [2]
    # A tool naming the old instance gets the events it committed; its buckets moved.
    argv = ["report", "queries", "--db", path, "--format", "json", "--since", SINCE]
    assert main([*argv, "--until", UNTIL, "--instance", "container-1"]) == 0
    rows = orjson.loads(capsys.readouterr().out)["rows"]
    assert [(q["query_id"], q["inferences"]) for q in rows] == [("q1", 1)]


def test_an_unclustered_sqlite_bucket_table_is_rebuilt_without_rowid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ai_usage_exporter.ledger.buckets import CLUSTERED_KEY
    from ai_usage_exporter.ledger.sqlite import SQLiteLedger

    db = str(tmp_path / "old.db")

    def layout() -> tuple[str, list[str], list[str]]:
        with sqlite3.connect(db) as conn:
            (sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = ?", (TABLE,)
            ).fetchone()
            info = conn.execute(f"PRAGMA table_info({TABLE})").fetchall()
            indexes = [r[1] for r in conn.execute(f"PRAGMA index_list({TABLE})")]
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        return sql, pk, indexes

    def sums(ledger: Ledger) -> list[tuple[Any, ...]]:
        group = ("bucket", INSTANCE, *KEY_FIELDS)
        return sorted(row for s in STEPS.values() for row in ledger.bucket_sums(s, 0, 2**40, group))

    with monkeypatch.context() as m:
        m.setattr(SQLiteLedger, "clustered_buckets", False)  # the layout before clustering
        with Recorder(db, CollectorRegistry(), instance="pod-a") as rec:
            rec.record_many(POD_A)
            before = sums(rec.ledger)
            reports = [build_report(rec.ledger, n, Window(D0, D0 + 2 * DAY)) for n in REPORTS]
    sql, pk, indexes = layout()
    assert "WITHOUT ROWID" not in sql and f"{TABLE}_range" in indexes
    assert len(before) == 6  # two events, three steps

    with Recorder(db, CollectorRegistry(), instance="pod-a") as rec:
        assert sums(rec.ledger) == before
        assert [build_report(rec.ledger, n, Window(D0, D0 + 2 * DAY)) for n in REPORTS] == reports
        rec.record_many([{**POD_A[0], "timestamp": D0 + 3600 + 7}])
        after = sums(rec.ledger)
    sql, pk, indexes = layout()
    assert "WITHOUT ROWID" in sql and pk == list(CLUSTERED_KEY)
    assert f"{TABLE}_range" not in indexes  # the primary key orders by (step, bucket)
    assert len(after) == 6
    # The first event's buckets (gpt-4o-mini) hold two requests now, the other's one.
    model, requests = 2 + KEY_FIELDS.index("model"), 2 + len(KEY_FIELDS)
    assert [(r[model], r[requests]) for r in after] == [
        (r[model], r[requests] * (2 if r[model] == "gpt-4o-mini" else 1)) for r in before
    ]
