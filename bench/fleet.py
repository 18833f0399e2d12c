"""Events per second into one PostgreSQL ledger from 1, 2 and 3 sidecars, against COPY.

Run from the repository root: ``python3 -m bench.fleet`` (``--smoke`` for a quick
check). The database is ``--db`` or AI_USAGE_EXPORTER_TEST_POSTGRES_URL; every run
uses a fresh schema, dropped afterwards. Without a database the script says so and
exits 0 (the smoke test then proves only that it imports).

Three questions, each next to the anchor, which is the same rows inserted with one
``COPY events FROM STDIN`` per batch by one client: the fastest way in, and one
that checks no idempotency key and keeps no rollup.

1. Insert statements (one client, batches of 100 and 1,000 keyed rows; insert and
   commit only): ``INSERT ... SELECT FROM unnest(arrays)``, multi-row ``VALUES``,
   ``executemany`` (psycopg pipelines it) and ``COPY`` into a temporary table then
   ``INSERT ... SELECT``, each with ``ON CONFLICT (idempotency_key) DO NOTHING
   RETURNING``.
2. Ledger writers: 1, 2 and 3 processes, each a sidecar's ledger (its own instance)
   committing batches through ``PostgresLedger.write`` (dedupe, insert, rollup upsert,
   one transaction per batch), with the lock-free path and with the previous path (a
   global advisory lock per write, then SELECT of the keys and INSERT). Events/s =
   all events / wall time from the first start to the last commit. Target: 3 writers
   on the lock-free path at >= 0.5x the anchor.
3. Sidecars over HTTP: 1, 2 and 3 ``serve`` processes; one asyncio client posts
   batches of 100 keyed events round-robin. Every 200 answer is a commit.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from ._harness import machine, verdict

TARGET = 0.5
PG_ENV = "AI_USAGE_EXPORTER_TEST_POSTGRES_URL"


# ---------------------------------------------------------------- data


def make_priced(writer: int, start: int, n: int) -> list[Any]:
    from ai_usage_exporter.core.events.model import UsageEvent
    from ai_usage_exporter.core.pricing.rates import Cost

    out = []
    for i in range(start, start + n):
        e = UsageEvent(
            provider="openai",
            model=("gpt-4o-mini", "gpt-4o", "o3-mini")[i % 3],
            service=f"svc-{i % 5}",
            input_tokens=100 + i % 997,
            output_tokens=10 + i % 131,
            duration_ms=50.0 + i % 900,
            idempotency_key=f"w{writer}-{i}",
        )
        out.append((e, Cost(1e-6 * e.input_tokens, 4e-6 * e.output_tokens, 0.0, "genai-prices")))
    return out


def make_rows(writer: int, start: int, n: int) -> list[tuple[Any, ...]]:
    from ai_usage_exporter.ledger.base import event_row

    now = time.time()
    return [event_row(e, c, now, False, f"w{writer}") for e, c in make_priced(writer, start, n)]


@contextmanager
def fresh_schema(base: str) -> Iterator[str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# ---------------------------------------------------------------- 1. insert statements


def _statements() -> dict[str, Callable[[Any, list[tuple[Any, ...]]], int]]:
    from ai_usage_exporter.ledger import postgres
    from ai_usage_exporter.ledger.base import EVENT_COLUMNS

    cols, on_conflict = postgres._COLS, postgres._ON_CONFLICT
    one = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"

    def anchor(cur: Any, rows: list[tuple[Any, ...]]) -> int:
        with cur.copy(f"COPY events ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return len(rows)

    def unnest(cur: Any, rows: list[tuple[Any, ...]]) -> int:
        cur.execute(postgres._UNNEST_SQL, [list(c) for c in zip(*rows, strict=True)])
        return len(cur.fetchall())

    def values(cur: Any, rows: list[tuple[Any, ...]]) -> int:
        n = 0
        for i in range(0, len(rows), 500):
            chunk = rows[i : i + 500]
            cur.execute(
                f"INSERT INTO events ({cols}) VALUES {', '.join([one] * len(chunk))} {on_conflict}",
                [v for row in chunk for v in row],
            )
            n += len(cur.fetchall())
        return n

    def executemany(cur: Any, rows: list[tuple[Any, ...]]) -> int:
        cur.executemany(
            f"INSERT INTO events ({cols}) VALUES {one} {on_conflict}", rows, returning=True
        )
        n = 0
        while True:
            n += len(cur.fetchall())
            if not cur.nextset():
                return n

    def copy_stage(cur: Any, rows: list[tuple[Any, ...]]) -> int:
        cur.execute(postgres._STAGE_SQL)
        with cur.copy(f"COPY {postgres._STAGE_TABLE} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(postgres._FROM_STAGE_SQL)
        return len(cur.fetchall())

    return {
        "COPY (anchor)": anchor,
        "unnest": unnest,
        "VALUES": values,
        "executemany": executemany,
        "COPY stage + INSERT": copy_stage,
    }


def bench_statements(base: str, batch: int, batches: int) -> None:
    import psycopg

    from ai_usage_exporter.ledger.postgres import PostgresLedger

    print(f"\n1. insert statements, one client, {batches} batches of {batch} keyed rows")
    with fresh_schema(base) as url:
        PostgresLedger(url, instance="bench").close()
        with psycopg.connect(url) as conn:
            results: dict[str, list[float]] = {}
            start = 0
            for _ in range(2):  # interleaved rounds, best of each
                for name, fn in _statements().items():
                    elapsed = 0.0
                    for _ in range(batches):
                        rows = make_rows(0, start, batch)
                        start += batch
                        t0 = time.perf_counter()
                        with conn.cursor() as cur:
                            stored = fn(cur, rows)
                        conn.commit()
                        elapsed += time.perf_counter() - t0
                        assert stored == batch, (name, stored)
                    results.setdefault(name, []).append(batch * batches / elapsed)
    anchor = max(results["COPY (anchor)"])
    for name, rates in results.items():
        print(f"  {name:<22} {max(rates):>9.0f} rows/s  {max(rates) / anchor:5.2f}x anchor")


# ---------------------------------------------------------------- 2. ledger writers


def _writer(
    url: str, locked: bool, writer: int, batch: int, batches: int, barrier: Any, out: Any
) -> None:
    from ai_usage_exporter.ledger.base import SQLLedger
    from ai_usage_exporter.ledger.postgres import _SCHEMA_LOCK_ID, PostgresLedger

    class AdvisoryLocked(PostgresLedger):
        """The previous write path: one lock for every sidecar, then SELECT and INSERT."""

        def _begin(self, cur: Any) -> None:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))

        _insert_new = SQLLedger._insert_new

    ledger = (AdvisoryLocked if locked else PostgresLedger)(url, instance=f"w{writer}")
    work = [make_priced(writer, k * batch, batch) for k in range(batches)]
    barrier.wait()
    t0 = time.time()
    for priced in work:
        result = ledger.write(priced, t0)
        assert all(result.inserted)
    t1 = time.time()
    ledger.close()
    out.put((t0, t1))


def bench_writers(
    base: str, batch: int, batches: int, counts: Sequence[int] = (1, 2, 3)
) -> float | None:
    print(f"\n2. ledger writers: each commits {batches} batches of {batch} events")
    ctx = mp.get_context("fork")
    # The anchor: the same number of rows as one writer, by COPY from one client.
    import psycopg

    from ai_usage_exporter.ledger.postgres import PostgresLedger

    with fresh_schema(base) as url:
        PostgresLedger(url, instance="anchor").close()
        work = [make_rows(0, k * batch, batch) for k in range(batches)]
        copy = _statements()["COPY (anchor)"]
        with psycopg.connect(url) as conn:
            t0 = time.perf_counter()
            for rows in work:
                with conn.cursor() as cur:
                    copy(cur, rows)
                conn.commit()
            anchor = batch * batches / (time.perf_counter() - t0)
    print(f"  {'COPY, one client (anchor)':<34} {anchor:>9.0f} events/s")
    three = None
    for locked in (False, True):
        for n in counts:
            with fresh_schema(base) as url:
                PostgresLedger(url, instance="setup").close()
                barrier, out = ctx.Barrier(n), ctx.Queue()
                procs = [
                    ctx.Process(target=_writer, args=(url, locked, w, batch, batches, barrier, out))
                    for w in range(n)
                ]
                for proc in procs:
                    proc.start()
                spans = [out.get(timeout=600) for _ in procs]
                for proc in procs:
                    proc.join(60)
                    assert proc.exitcode == 0, f"writer exited with {proc.exitcode}"
            seconds = max(s[1] for s in spans) - min(s[0] for s in spans)
            rate = n * batch * batches / seconds
            if n == 3 and not locked:
                three = rate / anchor
            label = (
                f"{n} writer{'s' if n > 1 else ''}, {'advisory lock' if locked else 'lock-free'}"
            )
            print(f"  {label:<34} {rate:>9.0f} events/s  {rate / anchor:5.2f}x anchor")
    return three


# ---------------------------------------------------------------- 3. sidecars over HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sidecar exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy")


async def _post_all(urls: list[str], bodies: list[bytes], connections: int) -> float:
    import httpx

    queue = list(enumerate(bodies))
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=connections * len(urls))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            while queue:
                i, body = queue.pop()
                r = await client.post(
                    f"{urls[i % len(urls)]}/api/usage", content=body, headers=headers
                )
                assert r.status_code == 200, r.text

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections * len(urls))))
        return time.perf_counter() - t0


def bench_sidecars(base: str, events: int, counts: Sequence[int] = (1, 2, 3)) -> None:
    import orjson

    print(f"\n3. sidecars over HTTP: {events} events in batches of 100, one asyncio client")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}
    for n in counts:
        with fresh_schema(base) as url:
            procs: list[subprocess.Popen[bytes]] = []
            try:
                urls = []
                for i in range(n):
                    port = _free_port()
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "ai_usage_exporter", "serve", "--port", str(port),
                         "--db", url, "--instance", f"sidecar-{i}", "--log-level", "warning"],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    procs.append(proc)
                    urls.append(f"http://127.0.0.1:{port}")
                    _wait_healthy(urls[-1], proc)
                bodies = []
                for start in range(0, events, 100):
                    batch = [
                        {"provider": "openai", "model": "gpt-4o-mini", "service": f"svc-{i % 5}",
                         "input_tokens": 100 + i % 997, "output_tokens": 10 + i % 131,
                         "duration_ms": 50 + i % 900, "idempotency_key": f"h-{i}"}
                        for i in range(start, min(start + 100, events))
                    ]  # fmt: skip
                    bodies.append(orjson.dumps(batch))
                seconds = asyncio.run(_post_all(urls, bodies, 8))
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait(30)
        label = f"{n} sidecar{'s' if n > 1 else ''}"
        print(f"  {label:<34} {events / seconds:>9.0f} events/s")


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--smoke", action="store_true", help="a tiny run that only checks the script works"
    )
    p.add_argument("--db", help=f"PostgreSQL URL (default: ${PG_ENV})")
    args = p.parse_args(argv)
    base = args.db or os.environ.get(PG_ENV)
    if not base:
        print(f"bench.fleet: no PostgreSQL: pass --db or set {PG_ENV}; nothing measured")
        return 0
    print(machine())
    if args.smoke:
        bench_statements(base, 20, 1)
        three = bench_writers(base, 20, 2, counts=(2,))
        bench_sidecars(base, 200, counts=(2,))
    else:
        bench_statements(base, 100, 50)
        bench_statements(base, 1_000, 10)
        three = bench_writers(base, 1_000, 20)
        bench_sidecars(base, 30_000)
    if three is not None:
        print(
            f"\n3 lock-free writers at {three:.2f}x the COPY anchor (target >= {TARGET}x): {verdict(three >= TARGET)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
