"""Start-up time of a Recorder over a 1-million-event ledger, and memory after recording it.

Run from the repository root: ``python3 -m bench.restart`` (``--smoke`` records 20,000).

1. Build: one Recorder (label caps service=50, model=5; the events carry 300 services
   and 8 priced models, so both caps fold) records 1,000,000 events through
   ``record_many`` in batches of 10,000: one group commit each, SQLite
   synchronous=full. The batches reuse a pool of 10,000 pre-built ``UsageEvent``
   objects (no idempotency keys, so each is stored again), so the process holds no
   event garbage when its VmRSS (/proc/self/status) is read. Anchor for memory: the
   same process's VmRSS before the Recorder existed.
2. Restart: a fresh process opens a Recorder over that ledger, three times; its
   constructor rebuilds every counter from the rollup table. Anchors: the same start
   over an empty ledger, and the GROUP BY over the events table that a start without
   the rollup would need. The rebuilt counters are checked against the live ones.

The ledger lives in a temporary directory for the run only. Target: start-up < 5 s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.recorder.recorder import Recorder

from ._harness import MODELS, machine, peak_rss_kib, rss_kib, verdict

TARGET_SECONDS = 5.0
BATCH = 10_000
LABEL_CAPS = {"service": 50, "model": 5}


def make_pool(n: int, seed: int = 3) -> list[UsageEvent]:
    rng = random.Random(seed)
    now = time.time()
    pool = []
    for _ in range(n):
        inp = rng.randint(100, 8000)
        provider, model = rng.choice(MODELS)
        error = rng.random() < 0.02
        pool.append(
            UsageEvent(
                provider=provider,
                model=model,
                service=f"service-{rng.randint(0, 299)}",
                operation=rng.choice(("chat", "chat", "chat", "embeddings")),
                status="error" if error else "ok",
                level="error" if error else "info",
                input_tokens=inp,
                cached_input_tokens=rng.randint(0, inp // 2),
                output_tokens=rng.randint(1, 2000),
                duration_ms=round(rng.uniform(100.0, 12_000.0), 1),
                timestamp=now,
            )
        )
    return pool


def usage_lines(text: str) -> list[str]:
    """The usage samples of an exposition (not the exporter's own), sorted."""
    return sorted(
        line
        for line in text.splitlines()
        if line.startswith("ai_") and not line.startswith("ai_exporter")
    )


def usage_totals(text: str) -> dict[str, float]:
    """Requests, tokens by type and cost by type summed over every series."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("ai_requests", "ai_tokens", "ai_cost"):
            continue
        for sample in family.samples:
            key = f"{family.name}:{sample.labels.get('type', '')}"
            out[key] = out.get(key, 0.0) + sample.value
    # Float sums over series depend on their order; compare to a billionth.
    return {k: round(v, 9) for k, v in sorted(out.items())}


def start_once(db: str) -> None:
    """Child mode: open a Recorder over `db`, print what it took, close."""
    t0 = time.perf_counter()
    recorder = Recorder(db, label_caps=LABEL_CAPS)
    seconds = time.perf_counter() - t0
    text = recorder.state.render_text()
    out = {
        "seconds": seconds,
        "rebuild_seconds": recorder.rebuild_seconds,
        "rss_kib": rss_kib(),
        "series": len(recorder.state.series),
        "totals": usage_totals(text),
        "lines": usage_lines(text),
    }
    recorder.close()
    print(orjson.dumps(out).decode())


def restart(db: Path) -> tuple[float, dict[str, object]]:
    """Process wall time to a closed Recorder, and what the child reported."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bench.restart", "--start-once", str(db)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    wall = time.perf_counter() - t0
    return wall, orjson.loads(out.strip().splitlines()[-1])


def scan_seconds(db: Path) -> float:
    """What a start without the rollup would run: aggregate every event."""
    import sqlite3

    conn = sqlite3.connect(db)
    t0 = time.perf_counter()
    conn.execute(
        "SELECT service, provider, model, operation, status, level, count(*), "
        "sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(cost_input), "
        "sum(cost_output), sum(cost_total), sum(duration_ms) FROM events "
        "GROUP BY service, provider, model, operation, status, level"
    ).fetchall()
    seconds = time.perf_counter() - t0
    conn.close()
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--smoke", action="store_true", help="a tiny run that only checks the script works"
    )
    p.add_argument("--start-once", metavar="DB", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.start_once:
        start_once(args.start_once)
        return 0

    total = 20_000 if args.smoke else 1_000_000
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp_name:
        tmp = Path(tmp_name)
        db = tmp / "ledger.db"
        pool = make_pool(min(BATCH, total))
        rss_before = rss_kib()
        recorder = Recorder(str(db), label_caps=LABEL_CAPS)
        t0 = time.perf_counter()
        done = 0
        while done < total:
            batch = pool[: min(BATCH, total - done)]
            recorder.record_many(batch)
            done += len(batch)
        build_s = time.perf_counter() - t0
        rss_after, peak = rss_kib(), peak_rss_kib()
        live_text = recorder.state.render_text()
        series = len(recorder.state.series)
        recorder.close()
        db_mib = sum(f.stat().st_size for f in tmp.glob("ledger.db*")) / 2**20

        import sqlite3

        conn = sqlite3.connect(db)
        (rollup_rows,) = conn.execute("SELECT count(*) FROM rollup").fetchone()
        conn.close()

        print(
            f"\nbuild: {done} events via record_many({BATCH}) in {build_s:.1f} s "
            f"({done / build_s:.0f} events/s), ledger {db_mib:.0f} MiB, {rollup_rows} rollup rows, "
            f"{series} exported label sets after folding"
        )
        print(
            f"memory after {done} events: VmRSS {rss_after / 1024:.1f} MiB "
            f"({rss_after / rss_before:.2f}x the {rss_before / 1024:.1f} MiB before the Recorder; "
            f"+{(rss_after - rss_before) / 1024:.1f} MiB), peak VmHWM {peak / 1024:.1f} MiB"
        )

        empty = tmp / "empty.db"
        Recorder(str(empty)).close()
        runs = 1 if args.smoke else 3
        full = [restart(db) for _ in range(runs)]
        bare = [restart(empty) for _ in range(runs)]
        scan = scan_seconds(db)

    def med(rs: list[tuple[float, dict[str, object]]], key: str) -> float:
        return statistics.median(float(r[1][key]) if key != "wall" else r[0] for r in rs)  # type: ignore[arg-type]

    start_full, start_empty = med(full, "seconds"), med(bare, "seconds")
    print(f"\nstart-up (median of {runs} fresh processes):")
    print(f"  {'':<34}{'Recorder()':>12}{'process':>10}{'VmRSS':>11}")
    print(
        f"  {f'over {done} events':<34}{start_full:>11.3f}s{med(full, 'wall'):>9.2f}s"
        f"{med(full, 'rss_kib') / 1024:>8.1f} MiB"
    )
    print(
        f"  {'over an empty ledger':<34}{start_empty:>11.3f}s{med(bare, 'wall'):>9.2f}s"
        f"{med(bare, 'rss_kib') / 1024:>8.1f} MiB"
    )
    print(f"  GROUP BY over the events table (no rollup): {scan:.3f} s")
    print(
        f"  Recorder() over {done} events = {start_full / start_empty:.1f}x an empty ledger, "
        f"{start_full / scan:.3f}x the events scan"
    )
    same = full[0][1]["totals"] == usage_totals(live_text)
    print(
        f"  rebuilt totals (requests, tokens, cost by type) equal the live ones: {'yes' if same else 'NO'}"
    )
    identical = full[0][1]["lines"] == usage_lines(live_text)
    print(
        "  rebuilt usage series identical to the live ones, label by label: "
        + ("yes" if identical else "no (the label values admitted under the caps differ)")
    )
    print(
        f"target: start-up < {TARGET_SECONDS:g} s: {start_full:.3f} s "
        f"({start_full / TARGET_SECONDS:.3f}x the target) {verdict(start_full < TARGET_SECONDS)}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
