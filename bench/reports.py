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

Targets: daily and agents < 1 s, query < 50 ms, import >= 50,000 lines/s.
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

from ai_usage_exporter.core.reports import Window, build_report
from ai_usage_exporter.core.rollup import STEPS
from ai_usage_exporter.importer.run import import_files
from ai_usage_exporter.ledger import open_ledger
from ai_usage_exporter.ledger.buckets import TABLE, backfill_sql
from ai_usage_exporter.recorder.recorder import Recorder

from ._harness import machine, verdict

DAY = 86400


def generate(db: str, n: int, end: int) -> None:
    ledger = open_ledger(db, synchronous="normal")
    start = end - 30 * DAY
    span = 30 * DAY / n
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
    args = p.parse_args(argv)
    n = 20_000 if args.smoke else args.events
    lines = 2_000 if args.smoke else args.import_lines
    print(machine())
    end = int(time.time() // DAY + 1) * DAY
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        generate(db, n, end)
        print(f"build: {n:,} events and their buckets in {time.perf_counter() - t0:.1f} s")
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
