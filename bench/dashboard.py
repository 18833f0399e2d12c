"""Latency of every data request the dashboard makes, over a 1-million-event ledger.

Run from the repository root: ``python3 -m bench.dashboard`` (``--smoke`` records 5,000;
``--events N`` for another size).

1. Build: a Recorder records N events through ``record_many`` in batches of 10,000,
   spread evenly over the last 30 days: 40 services, each with its agent (12 in all),
   tool (6) and two of 8 models, 20 tenants, 2% errors (about 3,200 rollup keys).
   The ledger lives in a temporary directory.
2. Serve: ``ai-usage-exporter serve`` over that ledger in its own process.
3. Ask: each request the page sends (status, the JSON view, the five timeseries for each
   window 15m/1h/24h/7d/30d, and the exports), over HTTP from this process, 15 times
   each (at least 3, fewer once one request has taken 10 s in all); p50 and p99 each.
   Anchor: the GROUP BY over the events table a dashboard without time buckets would
   run for the cost chart, timed on the same file.

Target: every request answers in < 100 ms at p50 (p99 printed beside it).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.recorder.recorder import Recorder

from ._harness import MODELS, machine, verdict

TARGET_MS = 100.0
BATCH = 10_000
REPS = 15
BUDGET_SECONDS = 10.0
DAY = 86_400
# window -> (seconds, step), as app.js asks for them.
WINDOWS = {"15m": (900, "1m"), "1h": (3600, "1m"), "24h": (DAY, "1h"), "7d": (7 * DAY, "1h"),
           "30d": (30 * DAY, "1d")}  # fmt: skip


def build(db: Path, n: int, now: float, seed: int = 7) -> float:
    """Record `n` events spread over 30 days; returns the seconds it took."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    with Recorder(str(db)) as recorder:
        for start in range(0, n, BATCH):
            batch = []
            for i in range(start, min(n, start + BATCH)):
                inp = rng.randint(100, 8000)
                # Attribution hangs together as in a real fleet: a service runs one
                # agent with its tool and two models, so the rollup holds thousands of
                # keys, not every combination.
                svc = rng.randint(0, 39)
                provider, model = MODELS[(svc + rng.randint(0, 1)) % len(MODELS)]
                error = rng.random() < 0.02
                batch.append(
                    UsageEvent(
                        provider=provider,
                        model=model,
                        service=f"service-{svc}",
                        status="error" if error else "ok",
                        level="error" if error else "info",
                        input_tokens=inp,
                        cached_input_tokens=rng.randint(0, inp // 2),
                        output_tokens=rng.randint(1, 2000),
                        duration_ms=round(rng.uniform(100.0, 12_000.0), 1),
                        agent=f"agent-{svc % 12}",
                        tenant=f"tenant-{rng.randint(0, 19)}",
                        tool=(None, "search", "sql", "browse", "code", "mail")[svc % 6],
                        # Oldest first, the newest a minute ago: every window has data.
                        timestamp=now - 60 - (n - i) * (30 * DAY - 120) / n,
                    )
                )
            recorder.record_many(batch)
    return time.perf_counter() - t0


def requests_of_the_page(now: float) -> list[tuple[str, str]]:
    """(label, path) of every data request the page makes, per window."""
    out = [("status", "/api/status"), ("JSON view", "/api/metrics?limit=20")]
    for name, (span, step) in WINDOWS.items():
        base = f"step={step}&from={int(now) - span}&to={int(now)}"
        out += [
            (f"{name} cost by model", f"/api/metrics/timeseries?metric=cost&by=model&{base}"),
            (f"{name} tokens by type", f"/api/metrics/timeseries?metric=tokens&by=type&{base}"),
            (f"{name} requests", f"/api/metrics/timeseries?metric=requests&{base}"),
            (f"{name} errors", f"/api/metrics/timeseries?metric=errors&{base}"),
            (f"{name} p95 duration", f"/api/metrics/timeseries?metric=duration&stat=p95&{base}"),
        ]
    # The exports as app.js asks for them: all time from 0, a window widened to whole
    # buckets of the chart's step (whole days for daily).
    span, step = WINDOWS["30d"]
    since = iso(int(now - span) // DAY * DAY)
    until = iso(math.ceil(now / DAY) * DAY)
    out += [
        ("export models, all time", "/api/reports/models?format=csv&limit=10000&since=0"),
        (
            "export daily, 30d",
            f"/api/reports/daily?format=csv&limit=10000&since={since}&until={until}",
        ),
        (
            "export agents, 30d",
            f"/api/reports/agents?format=json&limit=10000&since={since}&until={until}",
        ),
    ]
    return out


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ai_usage_exporter", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--db", str(db), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("the sidecar did not start")


def time_request(client: httpx.Client, path: str, reps: int) -> tuple[float, list[float]]:
    """Milliseconds of the first answer, and of each repeat (as the page polls)."""
    t0 = time.perf_counter()
    r = client.get(path)
    first = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    out: list[float] = []
    spent = 0.0
    while len(out) < reps and (len(out) < 3 or spent < BUDGET_SECONDS):
        t0 = time.perf_counter()
        r = client.get(path)
        dt = time.perf_counter() - t0
        r.raise_for_status()
        out.append(dt * 1000)
        spent += dt
    return first, out


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def anchor_ms(db: Path, now: float, span: int, step: int) -> float:
    """The events-table GROUP BY that the cost-by-model chart would need without buckets."""
    conn = sqlite3.connect(db)
    try:
        t0 = time.perf_counter()
        conn.execute(
            "SELECT CAST(ts / ? AS INTEGER), provider, model, sum(cost_total) FROM events "
            "WHERE ts >= ? AND ts < ? GROUP BY 1, 2, 3",
            (step, now - span, now),
        ).fetchall()
        return (time.perf_counter() - t0) * 1000
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a tiny run that only checks it works")
    p.add_argument("--events", type=int, help="events in the ledger (default 1,000,000)")
    p.add_argument(
        "--db", type=Path, help="keep the ledger here, and reuse it if it exists (its build time)"
    )
    args = p.parse_args(argv)
    n = args.events or (5_000 if args.smoke else 1_000_000)
    reps = 2 if args.smoke else REPS
    print(machine())
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        db = args.db or Path(tmp) / "ledger.db"
        if db.exists():
            with Recorder(str(db)) as r:
                n = r.ledger.count_events()
                newest = r.ledger.latest_event_ts()
            # The windows end where the stored events do, as they did when built.
            now = (newest or now) + 60
            print(f"reusing {db}: {n} events")
        else:
            seconds = build(db, n, now)
            size = db.stat().st_size / 2**20
            print(
                f"build: {n} events via record_many({BATCH}) in {seconds:.1f} s, "
                f"ledger {size:.0f} MiB"
            )
        proc, url = serve(db)
        worst = coldest = 0.0
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                print(
                    f"\n{'request':<28} {'first ms':>9} {'p50 ms':>9} {'p99 ms':>9} {'n':>3}  "
                    f"p50 < {TARGET_MS:.0f} ms"
                )
                for label, path in requests_of_the_page(now):
                    first, ms = time_request(client, path, reps)
                    med = statistics.median(ms)
                    worst = max(worst, med)
                    coldest = max(coldest, first)
                    print(
                        f"{label:<28} {first:9.1f} {med:9.1f} {p99(ms):9.1f} {len(ms):>3}  "
                        f"{verdict(med < TARGET_MS)}"
                    )
        finally:
            proc.terminate()
            proc.wait(30)
        print("\nanchor: GROUP BY over the events table for the cost chart (no time buckets)")
        for name, (span, step) in WINDOWS.items():
            step_s = {"1m": 60, "1h": 3600, "1d": DAY}[step]
            print(f"{name:<5} {anchor_ms(db, now, span, step_s):9.1f} ms")
    print(
        f"\nslowest request p50 {worst:.1f} ms: {verdict(worst < TARGET_MS)} "
        f"(target < {TARGET_MS:.0f} ms); slowest first request {coldest:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
