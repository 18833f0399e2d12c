"""Run the real sidecar for end-to-end tests: a `serve` process on a free port, or an
in-process uvicorn server over a Recorder; and parse expositions into sample dicts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

SampleKey = tuple[str, frozenset[tuple[str, str]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthy(
    base_url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} did not become healthy within {timeout} s")


class ServerProcess:
    """`python -m ai_usage_exporter serve` as a child process."""

    def __init__(
        self,
        db: Path | str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.db = db
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ai_usage_exporter", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--db", str(db), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
        )  # fmt: skip
        try:
            wait_healthy(self.url, self.proc)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


@contextmanager
def server_process(
    db: Path | str, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(db, args, env)
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on a free port; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def exposition_samples(text: str) -> dict[SampleKey, float]:
    """Every sample of an exposition, keyed by name and label set."""
    out: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(base_url: str, headers: Mapping[str, str] | None = None) -> dict[SampleKey, float]:
    r = httpx.get(f"{base_url}/metrics", headers=dict(headers or {}), timeout=10)
    r.raise_for_status()
    return exposition_samples(r.text)
