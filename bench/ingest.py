"""Events per second into the sidecar over HTTP, against a bare Starlette app.

Run from the repository root: ``python3 -m bench.ingest`` (``--smoke`` for a quick check).

Two servers run as separate processes on 127.0.0.1, on the same uvicorn settings (the
sidecar's: uvloop and httptools when installed, no access log, no server header):

- the sidecar, ``python3 -m ai_usage_exporter serve --port P --db <tmp>/ingest.db``:
  every 200 answer is a durable acknowledgement (committed to SQLite with
  synchronous=full, i.e. fsynced, then counted);
- the anchor: a minimal Starlette app with one route that reads the body, parses it
  with orjson and answers ``{"accepted": n, "duplicates": 0}``.

A load generator in another process posts one fixed body (1, 100 or 1,000 events;
no idempotency keys, so every post is recorded) from concurrent keep-alive
connections for a fixed time. Two generators are measured against the anchor at batch
1 — wrk (C, one thread, a Lua script) and an asyncio httpx client — and the more
capable one drives every run. Events/s = 2xx responses x batch / seconds; any non-2xx
answer is reported. Targets: batch 100 at >= 25% of the anchor's events/s, single
posts at >= 50% of the anchor's posts/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from ._harness import machine, verdict
from .record import make_fields

TARGET_BATCH_100 = 0.25
TARGET_SINGLE = 0.50
BATCHES = (1, 100, 1_000)
CONNECTIONS = 32

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
"""


# ---------------------------------------------------------------- the anchor server


def serve_bare(port: int) -> None:
    """The anchor: parse the JSON body with orjson and answer, nothing else."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def post_usage(request: Request) -> Response:
        value = orjson.loads(await request.body())
        n = len(value) if isinstance(value, list) else 1
        return Response(
            orjson.dumps({"accepted": n, "duplicates": 0}), media_type="application/json"
        )

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    app = Starlette(
        routes=[
            Route("/api/usage", post_usage, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    # The settings `ai_usage_exporter.cli.serve` gives uvicorn.
    uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=30,
            server_header=False,
        )
    ).run()


# ---------------------------------------------------------------- the httpx generator


async def _httpx_load(url: str, body: bytes, connections: int, seconds: float) -> None:
    import httpx

    ok = errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal ok, errors
            while time.perf_counter() < deadline:
                r = await client.post(url, content=body, headers=headers)
                if 200 <= r.status_code < 300:
                    ok += 1
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    print(orjson.dumps({"ok": ok, "errors": errors, "seconds": elapsed}).decode())


# ---------------------------------------------------------------- running things


@dataclass
class Run:
    generator: str
    ok: int  # 2xx responses
    errors: int  # other responses and socket errors
    seconds: float

    @property
    def posts_per_s(self) -> float:
        return self.ok / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_wrk(url: str, body_path: Path, script: Path, connections: int, seconds: float) -> Run:
    wrk = shutil.which("wrk")
    assert wrk is not None
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env={**os.environ, "BENCH_BODY": str(body_path)},
        check=True,
    ).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if m is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    total = int(m.group(1))
    elapsed = float(m.group(2)) / (1000.0 if m.group(3) == "ms" else 1.0)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    sock_errors = sum(int(g) for g in sock.groups()) if sock else 0
    return Run("wrk", total - errors, errors + sock_errors, elapsed)


def run_httpx(url: str, body_path: Path, connections: int, seconds: float) -> Run:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ingest",
            "--httpx-client",
            url,
            str(body_path),
            str(connections),
            str(seconds),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    r = orjson.loads(out.strip().splitlines()[-1])
    return Run("httpx", int(r["ok"]), int(r["errors"]), float(r["seconds"]))


def accepted_events(base: str) -> float:
    """ai_exporter_events_accepted_total from the sidecar's /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^ai_exporter_events_accepted_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def bodies(tmp: Path) -> dict[int, Path]:
    fields = make_fields(max(BATCHES))
    for f in fields:  # the server stamps the time; levels follow status by default
        del f["level"]
    out = {}
    for n in BATCHES:
        path = tmp / f"body-{n}.json"
        path.write_bytes(orjson.dumps(fields[0] if n == 1 else fields[:n]))
        out[n] = path
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--smoke", action="store_true", help="a tiny run that only checks the script works"
    )
    p.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--httpx-client", nargs=4, metavar="X", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return 0
    if args.httpx_client is not None:
        url, body, conns, secs = args.httpx_client
        asyncio.run(_httpx_load(url, Path(body).read_bytes(), int(conns), float(secs)))
        return 0

    seconds = 1.0 if args.smoke else 5.0
    batches = (1, 100) if args.smoke else BATCHES
    print(machine())
    print(
        f"each run {seconds:g} s, {CONNECTIONS} connections; sidecar synchronous=full (fsync per group commit)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        body = bodies(tmp)
        script = tmp / "post.lua"
        script.write_text(_WRK_SCRIPT)
        ports = {"bare": free_port(), "sidecar": free_port()}
        cmds = {
            "bare": [sys.executable, "-m", "bench.ingest", "--serve-bare", str(ports["bare"])],
            "sidecar": [
                sys.executable,
                "-m",
                "ai_usage_exporter",
                "serve",
                "--port",
                str(ports["sidecar"]),
                "--db",
                str(tmp / "ingest.db"),
                "--log-level",
                "warning",
            ],  # fmt: skip
        }
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, cmd in cmds.items():
                procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
            base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            for name in cmds:
                wait_healthy(base[name] + "/healthz", procs[name])
            return _measure(base, body, script, seconds, batches, args.smoke)
        finally:
            for proc in procs.values():
                stop(proc)


def _measure(
    base: dict[str, str],
    body: dict[int, Path],
    script: Path,
    seconds: float,
    batches: Sequence[int],
    smoke: bool,
) -> int:
    has_wrk = shutil.which("wrk") is not None

    def load(gen: str, server: str, batch: int, secs: float = seconds) -> Run:
        url = base[server] + "/api/usage"
        if gen == "wrk":
            return run_wrk(url, body[batch], script, CONNECTIONS, secs)
        return run_httpx(url, body[batch], CONNECTIONS, secs)

    # Which generator can push more: both against the anchor, single-event posts.
    gens = ["httpx", "wrk"] if has_wrk else ["httpx"]
    if not smoke:
        for server in base:  # warm-up
            load(gens[-1], server, 1, 1.0)
    ceilings = {g: load(g, "bare", 1) for g in gens}
    print("\ngenerator ceiling (single-event posts to the anchor):")
    for g, r in ceilings.items():
        print(f"  {g:<6}{r.posts_per_s:>10.0f} posts/s")
    gen = max(ceilings, key=lambda g: ceilings[g].posts_per_s)
    if not has_wrk:
        print("  (wrk not installed: `apt-get install -y wrk` for a more capable generator)")
    print(f"  using {gen}")

    print(
        f"\n{'batch':>6}{'server':>9}{'posts/s':>11}{'events/s':>12}{'non-2xx':>9}{'x anchor':>10}"
    )
    ratios: dict[int, float] = {}
    before = accepted_events(base["sidecar"])
    answered = 0
    for batch in batches:
        bare = ceilings[gen] if batch == 1 else load(gen, "bare", batch)
        side = load(gen, "sidecar", batch)
        answered += side.ok * batch
        ratios[batch] = side.posts_per_s / bare.posts_per_s
        for name, r in (("anchor", bare), ("sidecar", side)):
            ratio = r.posts_per_s / bare.posts_per_s
            print(
                f"{batch:>6}{name:>9}{r.posts_per_s:>11.0f}{r.posts_per_s * batch:>12.0f}"
                f"{r.errors:>9}{ratio:>10.2f}"
            )
    committed = accepted_events(base["sidecar"]) - before
    print(
        f"\nsidecar acknowledged {answered} events with 2xx and counted {committed:.0f} as committed "
        "(more when posts in flight at a run's end were committed after the generator stopped)"
    )
    print("targets:")
    if 100 in ratios:
        x = ratios[100]
        print(
            f"  batch 100 >= {TARGET_BATCH_100:.0%} of the anchor's events/s: {x:.0%} "
            f"{verdict(x >= TARGET_BATCH_100)} ({x / TARGET_BATCH_100:.2f}x the target)"
        )
    x = ratios[1]
    print(
        f"  single posts >= {TARGET_SINGLE:.0%} of the anchor's posts/s: {x:.0%} "
        f"{verdict(x >= TARGET_SINGLE)} ({x / TARGET_SINGLE:.2f}x the target)"
    )
    if committed < answered:
        print("error: the sidecar acknowledged events it did not count", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
