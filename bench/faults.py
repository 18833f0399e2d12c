"""Faults injected into a running sidecar: what its clients see, not how fast it is.

Run from the repository root: ``python3 -m bench.faults`` (``--smoke`` for a quick
check). Two questions (issue 23, items 8 and 9):

- **PostgreSQL goes away.** A `serve` process writes to the PostgreSQL named by ``--db``
  or AI_USAGE_EXPORTER_TEST_POSTGRES_URL through a TCP proxy in this process; one client
  posts a keyed event every ~10 ms (retrying a 503 with the same key) while the proxy
  cuts the line for 8 s. Printed: the answers by status, how many acknowledged events
  the ledger holds (lost = acknowledged and absent), how soon after the database came
  back a post was acknowledged, and the log lines. Without a database it is skipped.
- **Slow senders.** 1,500 connections send headers and the start of a 200-byte body,
  then nothing, to a `serve` with ``--body-timeout 5``; 20 normal posts are timed
  meanwhile. Printed: their latency, how many slow ones got 408 and were closed, when.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from bench._harness import machine, p50, parse_args

PG_ENV = "AI_USAGE_EXPORTER_TEST_POSTGRES_URL"
EVENT = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Serve:
    """`ai-usage-exporter serve` in a child process, its output collected."""

    def __init__(self, db: str, args: Sequence[str] = ()) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ai_usage_exporter", "serve", "--port", str(self.port),
             "--db", db, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        self.output: list[bytes] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=lambda: self.output.extend(stdout), daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("serve did not start:\n" + b"".join(self.output).decode())

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(30)
        time.sleep(0.1)
        return b"".join(self.output).decode()


class _Proxy:
    """A TCP relay whose line can be cut (connections reset, new ones refused)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.restore()

    def _run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def restore(self) -> None:
        async def listen() -> None:
            self.server = await asyncio.start_server(
                self._relay, "127.0.0.1", self.port, reuse_address=True
            )

        self._run(listen())

    def cut(self) -> None:
        async def cut() -> None:
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()
                self.server = None
            for w in list(self.writers):
                w.transport.abort()

        self._run(cut())

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self.writers |= pair

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            for w in pair:
                w.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= pair


def postgres_outage(base: str, cut_s: float) -> None:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    parts = urlsplit(url)
    proxy = _Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    creds = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    proxied = urlunsplit(parts._replace(netloc=f"{creds}127.0.0.1:{proxy.port}"))
    server = _Serve(proxied, ["--instance", "bench"])
    statuses: dict[int, int] = {}
    acked: list[str] = []
    stop = threading.Event()
    restored_at: list[float] = []
    back_after: list[float] = []

    def post() -> None:
        i = 0
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                key = f"bench-{i}"
                while not stop.is_set():
                    r = client.post(
                        f"{server.url}/api/usage", json={**EVENT, "idempotency_key": key}
                    )
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        acked.append(key)
                        if restored_at and not back_after:
                            back_after.append(time.monotonic() - restored_at[0])
                        break
                    time.sleep(0.05)
                i += 1
                time.sleep(0.01)

    try:
        poster = threading.Thread(target=post)
        poster.start()
        time.sleep(1.0)
        proxy.cut()
        time.sleep(cut_s)
        proxy.restore()
        restored_at.append(time.monotonic())
        deadline = time.monotonic() + 30
        while not back_after and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)
        stop.set()
        poster.join(60)
        log = server.stop()
        with psycopg.connect(url) as conn:
            keys = {r[0] for r in conn.execute("SELECT idempotency_key FROM events")}
    finally:
        stop.set()
        if server.proc.poll() is None:
            server.proc.kill()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    lines = log.splitlines()
    print(
        f"PostgreSQL cut for {cut_s:g} s under steady posting: answers by status "
        f"{dict(sorted(statuses.items()))}; acknowledged {len(acked)}, in the ledger "
        f"{len(keys & set(acked))}, lost {len(set(acked) - keys)}; first 200 "
        f"{back_after[0] if back_after else float('nan'):.2f} s after the database came back; "
        f"log: {sum('ledger unavailable' in x for x in lines)} line down, "
        f"{sum('available again' in x for x in lines)} up, {log.count('Traceback')} tracebacks"
    )


def slow_senders(n: int, body_timeout: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = _Serve(
            str(Path(tmp) / "s.db"),
            ["--body-timeout", f"{body_timeout:g}", "--max-connections", str(n + 500)],
        )
        head = (
            b"POST /api/usage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 200\r\n\r\n{"provider": "op'
        )
        t0 = time.monotonic()
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(head)
            s.setblocking(False)
            socks.append(s)
        latencies = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(20):
                a = time.monotonic()
                r = client.post("/api/usage", json={**EVENT, "idempotency_key": f"n{i}"})
                latencies.append(time.monotonic() - a)
                assert r.status_code == 200, r.text
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            sel.register(s, selectors.EVENT_READ, i)
        answers: dict[int, bytes] = {}
        closed: dict[int, float] = {}
        deadline = time.monotonic() + body_timeout + 30
        while len(closed) < n and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                i = key.data
                try:
                    data = socks[i].recv(65536)
                except BlockingIOError:
                    continue
                if data:
                    answers[i] = answers.get(i, b"") + data
                else:
                    closed[i] = time.monotonic() - t0
                    sel.unregister(socks[i])
        for s in socks:
            s.close()
        server.stop()
    got_408 = sum(1 for v in answers.values() if v.startswith(b"HTTP/1.1 408 "))
    print(
        f"{n} slow senders, --body-timeout {body_timeout:g}: 20 normal posts meanwhile p50 "
        f"{p50(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms, all 200; "
        f"{got_408} answered 408, {len(closed)} closed by the server, the last "
        f"{max(closed.values()) if closed else float('nan'):.1f} s after the first connected; "
        f"{n - len(closed)} still open"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__, argv)
    print(machine())
    base = os.environ.get(PG_ENV)
    if base:
        postgres_outage(base, 1.0 if args.smoke else 8.0)
    else:
        print(f"PostgreSQL outage: skipped, {PG_ENV} is not set")
    slow_senders(20 if args.smoke else 1500, 1.0 if args.smoke else 5.0)


if __name__ == "__main__":
    main()
