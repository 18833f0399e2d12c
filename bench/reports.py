"""Reports, query and import speed over a large SQLite ledger.

Run from the repository root: ``python3 -m bench.reports`` (1,000,000 events; pass
``--events 10000000`` for ten million; ``--smoke`` uses 20,000).

1. Build: the events are generated inside SQLite by one recursive CTE (30 days,
   10,000 users, 8 agents x 5 tasks x 4 tools, 3 models, 3 services, 2% errors),
   then the time buckets are built from them by the same SQL that backfills an
   older ledger. The build time is printed; it is not a target.
2. `report daily` and `report agents` for the 30 days (read from the day buckets),
   and `query --user X --limit 10` (the (user, ts) index), each the median of 5 runs.
   Anchor: the GROUP BY per day over the events table that a ledger without buckets
   would run for the same answer.
3. Import: a file of JSON event lines (no keys, so each gets one derived from its
   content) read through `import_files` into a fresh ledger (synchronous=full).
   Anchor: `orjson.loads` of the same lines, the floor of any reader.

4. Reconcile: 90 closed days of provider-reported usage (3 models billed under
   their dated snapshot names, 4 kinds each) stored in the ledger, compared with the
   ledger's day buckets by the same `build` the `reconcile` command prints. Anchor: a
   GROUP BY day, provider and model over the events of those 90 days.

Targets: daily and agents < 1 s, query < 50 ms, import >= 50,000 lines/s,
reconcile of 90 days < 2 s. `--days 90` spreads the events over 90 days (default 30).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ai_usage_exporter.config.reconcile import ProviderSettings, ReconcileSettings
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.core.reports import Window, build_report
from ai_usage_exporter.core.rollup import STEPS
from ai_usage_exporter.importer.run import import_files
from ai_usage_exporter.ledger import open_ledger
from ai_usage_exporter.ledger.buckets import TABLE, backfill_sql
from ai_usage_exporter.ledger.provider_usage import ProviderUsage
from ai_usage_exporter.reconcile import service
from ai_usage_exporter.recorder.recorder import Recorder

from ._harness import machine, verdict

DAY = 86400


def generate(db: str, n: int, end: int, days: int = 30) -> None:
    ledger = open_ledger(db, synchronous="normal")
    start = end - days * DAY
    span = days * DAY / n
    conn = ledger._write_conn()  # type: ignore[attr-defined]
    conn.execute("BEGIN")
    conn.execute(
        f"""
        INSERT INTO events (ts, received_at, provider, model, operation, service, status, level,
            input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
            reasoning_tokens, audio_input_tokens, audio_output_tokens,
            cost_input, cost_output, cost_total, cost_source,
            "user", query_id, agent, task, tool, duration_ms)
        WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {n - 1})
        SELECT {start} + i * {span}, {start} + i * {span}, 'openai',
            CASE i % 3 WHEN 0 THEN 'gpt-4o-mini' WHEN 1 THEN 'gpt-4o' ELSE 'o3-mini' END,
            'chat', 'svc' || (i % 3), CASE WHEN i % 50 = 0 THEN 'error' ELSE 'ok' END,
            CASE WHEN i % 50 = 0 THEN 'error' ELSE 'info' END,
            100 + i % 900, 10 + i % 90, 0, 0, 0, 0, 0,
            (100 + i % 900) * 1.5e-7, (10 + i % 90) * 6e-7,
            (100 + i % 900) * 1.5e-7 + (10 + i % 90) * 6e-7, 'genai-prices',
            'u' || (i % {max(1, min(10_000, n // 100))}), 'q' || (i / 4), 'agent' || (i % 8), 'task' || (i % 5),
            'tool' || (i % 4), 100 + i % 2000
        FROM seq
        """
    )
    conn.execute(f"DELETE FROM {TABLE}")
    for step in STEPS.values():
        # The rows above carry the unassigned instance (''), as a tool's writes do.
        conn.execute(backfill_sql(step, ledger.floor_sql, ledger.int_type, "''"))  # type: ignore[attr-defined]
    conn.execute("COMMIT")
    ledger.close()


def bench_reconcile(ledger: Any, today: int, runs: int) -> tuple[float, float]:
    """Seconds of the events GROUP BY anchor and of a 90-day reconcile (medians)."""
    since, until = today - 90 * DAY, today
    snapshots = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06",
                 "o3-mini": "o3-mini-2025-01-31"}  # fmt: skip
    rows = [
        ProviderUsage("openai", day, "", snap, kind, 1_000_000 + day % 977, 2_000_000_000)
        for day in range(since, until, DAY)
        for snap in snapshots.values()
        for kind in ("uncached_input", "cached_input", "output", "cache_write_5m")
    ]
    ledger.replace_provider_usage(
        "openai", dict.fromkeys(range(since, until, DAY), True), [""], rows
    )
    conn = ledger._read_conn()
    anchor = median_seconds(
        lambda: conn.execute(
            "SELECT CAST(ts / 86400 AS INTEGER), provider, model, sum(input_tokens), "
            "sum(output_tokens), sum(cached_input_tokens), sum(cache_write_tokens), "
            "sum(cost_total) FROM events WHERE ts >= ? AND ts < ? GROUP BY 1, 2, 3",
            (since, until),
        ).fetchall(),
        runs=runs,
    )
    book = PriceBook()
    settings = ReconcileSettings(
        providers={"openai": ProviderSettings("openai", "OPENAI_ADMIN_KEY", "http://unused")}
    )
    body = service.build(ledger, book, settings, ["openai"], since, until)
    assert len(body["rows"]) == 90 * len(snapshots), len(body["rows"])
    took = median_seconds(lambda: service.build(ledger, book, settings, ["openai"], since, until))
    return anchor, took


def median_seconds(fn: Callable[[], Any], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a tiny run that only checks the script")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--import-lines", type=int, default=200_000)
    p.add_argument("--days", type=int, default=30, help="days the events are spread over")
    args = p.parse_args(argv)
    n = 20_000 if args.smoke else args.events
    lines = 2_000 if args.smoke else args.import_lines
    print(machine())
    end = int(time.time() // DAY + 1) * DAY
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        generate(db, n, end, args.days)
        print(
            f"build: {n:,} events over {args.days} days and their buckets "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        ledger = open_ledger(db)
        w = Window(end - 30 * DAY, end)
        conn = ledger._read_conn()  # type: ignore[attr-defined]
        anchor = median_seconds(
            lambda: conn.execute(
                "SELECT CAST(ts / 86400 AS INTEGER), count(*), sum(input_tokens), "
                "sum(output_tokens), sum(cost_total) FROM events WHERE ts >= ? AND ts < ? "
                "GROUP BY 1",
                (w.since, w.until),
            ).fetchall(),
            runs=1 if n > 2_000_000 else 3,
        )
        daily = median_seconds(lambda: build_report(ledger, "daily", w))
        agents = median_seconds(lambda: build_report(ledger, "agents", w))
        query = median_seconds(
            lambda: ledger.select_events(
                ("ts", "model", "input_tokens"), {"user": "u42"}, limit=10
            )  # fmt: skip
        )
        assert len(ledger.select_events(("ts",), {"user": "u42"}, limit=10)) == 10
        rec_anchor, rec_took = bench_reconcile(ledger, end - DAY, runs=1 if n > 2_000_000 else 3)
        ledger.close()
        print(f"anchor GROUP BY day over the events table: {anchor * 1000:,.1f} ms")
        print(
            f"report daily, 30 days:  {daily * 1000:8.1f} ms  (target < 1000 ms) {verdict(daily < 1)}"
        )
        print(
            f"report agents, 30 days: {agents * 1000:8.1f} ms  (target < 1000 ms) {verdict(agents < 1)}"
        )
        print(
            f"query --user --limit 10: {query * 1000:7.2f} ms  (target < 50 ms) {verdict(query < 0.05)}"
        )
        print(
            f"anchor GROUP BY day, provider, model over 90 days of events: {rec_anchor * 1000:,.1f} ms"
        )
        print(
            f"reconcile, 90 days:     {rec_took * 1000:8.1f} ms  (target < 2000 ms) "
            f"{verdict(rec_took < 2)}"
        )

        log = Path(tmp) / "usage.log"
        with log.open("wb") as f:
            for i in range(lines):
                f.write(orjson.dumps({"provider": "openai", "model": "gpt-4o-mini",
                                      "input_tokens": 100 + i % 900, "output_tokens": 10 + i % 90,
                                      "user": f"u{i % 10000}", "query_id": f"q{i // 4}",
                                      "timestamp": end - DAY + i * 0.01}) + b"\n")  # fmt: skip
        t0 = time.perf_counter()
        for line in log.read_bytes().splitlines():
            orjson.loads(line)
        loads = time.perf_counter() - t0
        with Recorder(str(Path(tmp) / "import.db")) as rec:
            t0, c0 = time.perf_counter(), time.process_time()
            stats = import_files(rec, [str(log)])
            took, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert stats.accepted == lines, stats.summary()
        rate = lines / took
        print(f"anchor orjson.loads of the lines: {lines / loads:,.0f} lines/s")
        # CPU seconds (every thread) beside the wall time: on a shared machine the
        # wall time also counts the other processes' turns.
        print(f"import: {rate:,.0f} lines/s ({lines:,} lines in {took:.2f} s, CPU {cpu:.2f} s: "
              f"{lines / cpu:,.0f} lines per CPU-second) "
              f"(target >= 50,000) {verdict(rate >= 50_000)}")  # fmt: skip


if __name__ == "__main__":
    main()
