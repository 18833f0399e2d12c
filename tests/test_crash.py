"""Crashes and failures of a real `serve` process under load: kill -9, a full disk, SIGTERM.

The contract under test: a 200 means the events are in the ledger; the counters, after
any restart, equal what the ledger holds; a failed commit acknowledges nothing.
"""

from __future__ import annotations

import errno
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from _server import SampleKey, ServerProcess, scrape, serve_app, server_process
from ai_usage_exporter.ledger import LedgerError, SQLiteLedger
from ai_usage_exporter.ledger.base import WriteResult
from ai_usage_exporter.recorder.recorder import Recorder
from ai_usage_exporter.server import create_app

pytestmark = pytest.mark.slow

MODELS = (
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5"),
    ("selfhosted", "llama-local"),  # unpriced
)
TOKEN_TYPES = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cached_input": "cached_input_tokens",
    "cache_write": "cache_write_tokens",
    "reasoning": "reasoning_tokens",
    "audio_input": "audio_input_tokens",
    "audio_output": "audio_output_tokens",
    "cache_write_1h": "cache_write_1h_tokens",
    "image_input": "image_input_tokens",
    "image_output": "image_output_tokens",
    "cached_audio_input": "cached_audio_input_tokens",
    "cached_image_input": "cached_image_input_tokens",
    "video_input": "video_input_tokens",
    "video_output": "video_output_tokens",
    "cached_video_input": "cached_video_input_tokens",
}


def _event(rng: random.Random, key: str) -> dict[str, Any]:
    provider, model = rng.choice(MODELS)
    inp = rng.randint(0, 5000)
    out = rng.randint(0, 2000)
    event: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "service": rng.choice(("api", "worker")),
        "operation": rng.choice(("chat", "embeddings")),
        "status": rng.choice(("ok", "ok", "ok", "error")),
        "input_tokens": inp,
        "output_tokens": out,
        "cached_input_tokens": rng.randint(0, inp // 2),
        "reasoning_tokens": rng.randint(0, out // 3),
        "duration_ms": rng.uniform(5, 20_000),
        "idempotency_key": key,
    }
    if rng.random() < 0.3:
        event["ttft_ms"] = rng.uniform(1, 500)
    return event


@dataclass
class Load:
    """Client threads posting batches with unique keys until told to stop or refused."""

    url: str
    threads: int = 4
    batch: int = 50
    acked: set[str] = field(default_factory=set)
    acked_at: list[float] = field(default_factory=list)
    responses: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self, tid: int) -> None:
        rng = random.Random(tid)
        # A fresh connection per request: no keep-alive connection can be closed under
        # a request by the server's shutdown, so every failure is at connect or reply.
        with httpx.Client(base_url=self.url, timeout=60, headers={"connection": "close"}) as c:
            n = 0
            while not self.stop.is_set():
                keys = [f"t{tid}-b{n}-e{i}" for i in range(self.batch)]
                n += 1
                try:
                    r = c.post("/api/usage", json=[_event(rng, k) for k in keys])
                except httpx.TransportError as exc:
                    with self._lock:
                        self.errors.append(exc)
                    return
                with self._lock:
                    self.responses.append(r.status_code)
                    if r.status_code == 200:
                        assert r.json() == {"accepted": self.batch, "duplicates": 0}
                        self.acked.update(keys)
                        self.acked_at.append(time.monotonic())

    def start(self) -> None:
        for tid in range(self.threads):
            t = threading.Thread(target=self._run, args=(tid,), daemon=True)
            t.start()
            self._workers.append(t)

    def wait_acked(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} events acknowledged"
            time.sleep(0.01)

    def join(self, timeout: float = 60.0, *, stop: bool = True) -> None:
        if stop:
            self.stop.set()
        for t in self._workers:
            t.join(timeout)
            assert not t.is_alive()


def _ledger(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM events")]
    finally:
        conn.close()


def _expected_from_ledger(rows: list[dict[str, Any]]) -> dict[SampleKey, float]:
    """ai_requests_total, ai_tokens_total and ai_cost_total{type="total"} summed from rows."""
    out: dict[SampleKey, float] = defaultdict(float)
    for r in rows:
        series = {"service": r["service"], "provider": r["provider"], "model": r["model"]}
        req = {**series, "operation": r["operation"], "status": r["status"]}
        out[("ai_requests_total", frozenset(req.items()))] += 1
        for t, column in TOKEN_TYPES.items():
            out[("ai_tokens_total", frozenset({**series, "type": t}.items()))] += r[column]
        total = r["input_tokens"] + r["output_tokens"]
        out[("ai_tokens_total", frozenset({**series, "type": "total"}.items()))] += total
        out[("ai_cost_total", frozenset({**series, "type": "total"}.items()))] += r["cost_total"]
    return dict(out)


def _counted(samples: dict[SampleKey, float]) -> dict[SampleKey, float]:
    return {
        k: v
        for k, v in samples.items()
        if k[0] in ("ai_requests_total", "ai_tokens_total")
        or (k[0] == "ai_cost_total" and ("type", "total") in k[1])
    }


def _assert_counters_equal_ledger(samples: dict[SampleKey, float], db: Path) -> None:
    rows = _ledger(db)
    expected = _expected_from_ledger(rows)
    actual = _counted(samples)
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if key[0] == "ai_cost_total":
            # The rollup sums nanodollars; the rows hold each event's cost in dollars.
            assert actual[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        else:
            assert actual[key] == value, key


# ---------------------------------------------------------------- kill -9


def test_kill_9_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    server = ServerProcess(db)
    try:
        load = Load(server.url, threads=6, batch=40)
        load.start()
        load.wait_acked(2_000)
        server.proc.send_signal(signal.SIGKILL)
        load.join(stop=False)  # each thread stops at its first refused request
    finally:
        server.kill()
    assert server.proc.returncode == -signal.SIGKILL
    # Every thread was still posting when the process died.
    assert len(load.errors) == load.threads
    assert set(load.responses) == {200}

    stored = {r["idempotency_key"] for r in _ledger(db)}
    assert load.acked <= stored
    assert len(stored) % load.batch == 0  # a request's events commit together or not at all

    with server_process(db) as restarted:
        samples = scrape(restarted.url)
    _assert_counters_equal_ledger(samples, db)
    assert samples[("ai_exporter_events_accepted_total", frozenset())] == 0  # since restart


# ---------------------------------------------------------------- disk full


@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up ({result.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _fill(directory: Path) -> Path:
    """Write zeros until the filesystem is full; returns the filler file."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                f.write(b"\0")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _post(url: str, keys: list[str]) -> httpx.Response:
    rng = random.Random(keys[0])
    return httpx.post(f"{url}/api/usage", json=[_event(rng, k) for k in keys], timeout=30)


def test_disk_full_refuses_with_503_then_recovers(tmp_path: Path) -> None:
    # Root ignores file permissions, so a read-only file would not stop the writes;
    # a small tmpfs that really fills up does.
    with _tmpfs(tmp_path / "fs", "4m") as fs:
        db = fs / "ledger.db"
        with server_process(db) as server:
            assert _post(server.url, ["before"]).status_code == 200
            assert httpx.get(f"{server.url}/readyz").status_code == 200
            before = scrape(server.url)
            filler = _fill(fs)

            refused = [_post(server.url, [f"full-{i}-{j}" for j in range(200)]) for i in range(3)]
            for r in refused:
                assert r.status_code == 503
                assert r.headers["retry-after"] == "5"
                message = r.json()["error"]["message"]
                assert message.startswith("events not stored: ledger ")
                assert "database or disk is full" in message
            ready = httpx.get(f"{server.url}/readyz")
            assert ready.status_code == 503
            assert "database or disk is full" in ready.json()["error"]["message"]
            after = scrape(server.url)
            assert _counted(after) == _counted(before)
            rejected = (
                "ai_exporter_events_rejected_total",
                frozenset({("reason", "ledger_unavailable")}),
            )
            assert after[rejected] == 600

            filler.unlink()
            r = _post(server.url, ["after-1", "after-2"])
            assert r.json() == {"accepted": 2, "duplicates": 0}
            assert httpx.get(f"{server.url}/readyz").status_code == 200
            samples = scrape(server.url)
            keys = {row["idempotency_key"] for row in _ledger(db)}
            assert keys == {"before", "after-1", "after-2"}
            _assert_counters_equal_ledger(samples, db)


class _FailingLedger:
    """A SQLite ledger whose writes fail while `failing` is set, as a full disk makes them."""

    def __init__(self, path: Path) -> None:
        self.inner = SQLiteLedger(path)
        self.url = self.inner.url
        self.failing = False

    def write(self, priced: Any, received_at: float, meta: Any = None) -> WriteResult:
        if self.failing:
            raise LedgerError(f"ledger {self.url}: could not commit: database or disk is full")
        return self.inner.write(priced, received_at, meta)

    def check_writable(self) -> None:
        if self.failing:
            raise LedgerError(f"ledger {self.url} is not writable: database or disk is full")
        self.inner.check_writable()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_unwritable_ledger_in_process_refuses_with_503_then_recovers(tmp_path: Path) -> None:
    ledger = _FailingLedger(tmp_path / "ledger.db")
    recorder = Recorder(ledger, CollectorRegistry())
    try:
        with serve_app(create_app(recorder)) as url:
            assert _post(url, ["before"]).status_code == 200
            ledger.failing = True
            r = _post(url, ["during-1", "during-2"])
            assert r.status_code == 503
            assert r.json() == {
                "error": {
                    "message": f"events not stored: ledger {ledger.url}: could not commit: "
                    "database or disk is full; nothing was recorded, retry"
                }
            }
            assert httpx.get(f"{url}/readyz").status_code == 503
            ledger.failing = False
            assert _post(url, ["after"]).json() == {"accepted": 1, "duplicates": 0}
            assert httpx.get(f"{url}/readyz").status_code == 200
        assert {row["idempotency_key"] for row in ledger.inner.events()} == {"before", "after"}
    finally:
        recorder.close()


# ---------------------------------------------------------------- SIGTERM


def test_sigterm_under_load_drains_and_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    server = ServerProcess(db)
    try:
        # Big batches, so several are being parsed or committed when the signal lands.
        load = Load(server.url, threads=6, batch=2_000)
        load.start()
        load.wait_acked(20_000)
        signalled_at = time.monotonic()
        code = server.terminate(timeout=60)
        load.join(stop=False)
    finally:
        server.kill()
    assert code == 0
    # No request got an error reply: each was answered 200 or never reached the app.
    assert set(load.responses) == {200}
    for exc in load.errors:
        assert isinstance(exc, httpx.ConnectError | httpx.RemoteProtocolError | httpx.ReadError)
    # Requests in flight at the signal were finished, not dropped.
    assert any(t > signalled_at for t in load.acked_at)

    stored = {r["idempotency_key"] for r in _ledger(db)}
    assert load.acked <= stored
    with server_process(db) as restarted:
        _assert_counters_equal_ledger(scrape(restarted.url), db)
