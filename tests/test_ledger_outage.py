"""The ledger goes away under steady posting: every answer is 200 or 503 with Retry-After,
nothing acknowledged is lost, /readyz says so, and the log says it once each way.

PostgreSQL is cut with a TCP proxy between the sidecar and the machine's real server.
SQLite has no network to cut, so its two failures are made on the writer's connection,
needing no root: `PRAGMA query_only` refuses writes as a read-only file does ("attempt to
write a readonly database"; as root, chmod cannot take write access away from an open
file), and `PRAGMA max_page_count` at the current size fails the next commit that needs
a page with "database or disk is full", as a full disk does (test_crash.py fills a real
tmpfs where it may mount one).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from _tcpproxy import tcp_proxy

from _fake_upstream import fake_upstream
from _pg import fresh_schema
from _server import ServerProcess, exposition_samples, serve_app
from ai_usage_exporter import Recorder
from ai_usage_exporter.server.app import create_app

OPENAI_KEY = "sk-outage-test-key-0000000000000000"
CLIENT_TOKEN = "gw-outage-token"
CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Poster:
    """Posts one keyed event every few milliseconds; retries a 503 with the same key."""

    url: str
    acked: list[str] = field(default_factory=list)
    unavailable: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        i = 0
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                key = f"outage-{i}"
                while not self.stop.is_set():
                    try:
                        r = client.post(
                            f"{self.url}/api/usage",
                            json={"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10,
                                  "output_tokens": 5, "idempotency_key": key},
                        )  # fmt: skip
                    except httpx.TransportError as exc:
                        self.bad.append((0, repr(exc)))
                        return
                    if r.status_code == 200:
                        self.acked.append(key)
                        break
                    if r.status_code == 503 and r.headers.get("retry-after", "").isdigit():
                        self.unavailable += 1
                        time.sleep(0.05)
                        continue
                    self.bad.append((r.status_code, r.text[:300]))
                    time.sleep(0.05)
                i += 1
                time.sleep(0.01)


def _gateway_call(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
        timeout=30,
    )


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_postgres_cut_for_seconds_under_steady_posting(tmp_path: Path) -> None:
    with fresh_schema() as url, tcp_proxy("127.0.0.1", 5432) as proxy, fake_upstream("up") as up:
        parts = urlsplit(url)
        real_port = parts.port or 5432
        proxy.target = (parts.hostname or "127.0.0.1", real_port)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{proxy.port}"
        proxied = urlunsplit(
            parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
        )
        config = tmp_path / "c.yaml"
        config.write_text(
            "gateway:\n  upstreams:\n"
            f"    up: {{provider: openai, base_url: '{up.url}/v1', api_key_env: OPENAI_API_KEY}}\n"
        )
        env = {"OPENAI_API_KEY": OPENAI_KEY, "AI_USAGE_EXPORTER_GATEWAY_TOKEN": CLIENT_TOKEN}
        server = ServerProcess(proxied, ["--config", str(config), "--instance", "web-1"], env)
        output: list[bytes] = []
        assert server.proc.stdout is not None
        drain = threading.Thread(target=lambda: output.extend(server.proc.stdout), daemon=True)  # type: ignore[arg-type]
        drain.start()
        poster = Poster(server.url)
        posting = threading.Thread(target=poster.run, daemon=True)
        try:
            assert _gateway_call(server.url).status_code == 200
            posting.start()
            time.sleep(1.0)
            before = len(poster.acked)
            proxy.cut()
            _wait(lambda: poster.unavailable > 0, 5, "a 503 during the outage")
            ready = httpx.get(f"{server.url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.headers["retry-after"].isdigit()
            assert "ledger" in ready.json()["error"]["message"]
            refused = _gateway_call(server.url)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"].isdigit()
            assert refused.json()["error"]["code"] == "ledger_unavailable"
            served_upstream = len(up.requests)
            time.sleep(2.0)
            proxy.restore()
            _wait(
                lambda: httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200,
                15,
                "/readyz ready again",
            )
            n = len(poster.acked)
            _wait(lambda: len(poster.acked) > n + 5, 15, "posting acknowledged again")
            assert _gateway_call(server.url).status_code == 200
            poster.stop.set()
            posting.join(30)
            assert not posting.is_alive()
            assert poster.bad == []
            assert before > 0 and poster.unavailable > 0
            # The refused gateway call never reached the upstream: nothing unrecorded spent.
            assert len(up.requests) == served_upstream + 1
            # The gateway answers before its record of the call is committed (it is queued
            # for the writer), so the last call reaches the counters a moment later.
            want = len(poster.acked) + 2

            def requests_counted() -> float:
                text = httpx.get(f"{server.url}/metrics", timeout=10).text
                return sum(
                    v
                    for (name, _), v in exposition_samples(text).items()
                    if name == "ai_requests_total"
                )

            _wait(lambda: requests_counted() >= want, 10, "every acknowledged call counted")
            scraped = exposition_samples(httpx.get(f"{server.url}/metrics", timeout=10).text)
            assert server.terminate() == 0
        finally:
            poster.stop.set()
            server.kill()
        drain.join(10)
        import psycopg

        with psycopg.connect(url) as conn:
            keys = [r[0] for r in conn.execute("SELECT idempotency_key FROM events")]
        assert sorted(k for k in keys if k.startswith("outage-")) == sorted(poster.acked)
        assert len([k for k in keys if not k.startswith("outage-")]) == 2  # the gateway calls
        requests = sum(v for (name, labels), v in scraped.items() if name == "ai_requests_total")
        assert requests == len(poster.acked) + 2
    log = b"".join(output).decode()
    assert "Traceback" not in log, log
    assert [
        line for line in log.splitlines() if "ledger" in line and "unavailable" in line
    ].__len__() == 1, log
    assert [line for line in log.splitlines() if "available again" in line].__len__() == 1, log


def _post(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/usage",
        json={"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 3,
              "output_tokens": 2, "idempotency_key": key, "metadata": {"pad": key * 8000}},
        timeout=10,
    )  # fmt: skip


def _sqlite_outage(tmp_path: Path, fail: str, restore: str, message: str, caplog: Any) -> None:
    recorder = Recorder(str(tmp_path / "ai-usage.db"), instance="box")
    app = create_app(recorder, close_recorder=True)
    with serve_app(app) as url:
        assert _post(url, "a").status_code == 200
        writer: sqlite3.Connection = recorder.ledger._w  # type: ignore[attr-defined]
        with recorder._ledger_lock:
            for stmt in fail.split(";"):
                writer.execute(stmt)
        answers = [_post(url, f"b{i}") for i in range(3)]
        assert [r.status_code for r in answers] == [503, 503, 503]
        assert all(r.headers["retry-after"].isdigit() for r in answers)
        assert message in answers[0].json()["error"]["message"]
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert message in ready.json()["error"]["message"]
        with recorder._ledger_lock:
            writer.execute(restore)
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        assert [_post(url, f"b{i}").json() for i in range(3)] == [
            {"accepted": 1, "duplicates": 0}
        ] * 3
    keys = sorted(
        e["idempotency_key"] for e in Recorder(str(tmp_path / "ai-usage.db")).ledger.events()
    )
    assert keys == ["a", "b0", "b1", "b2"]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("ai_usage_exporter")]
    assert len([m for m in lines if "unavailable" in m]) == 1, lines
    assert len([m for m in lines if "available again" in m]) == 1, lines


def test_sqlite_that_refuses_writes_answers_503_and_recovers(tmp_path: Path, caplog: Any) -> None:
    _sqlite_outage(
        tmp_path, "PRAGMA query_only = ON", "PRAGMA query_only = OFF",
        "attempt to write a readonly database", caplog,
    )  # fmt: skip


def test_sqlite_that_is_full_answers_503_and_recovers(tmp_path: Path, caplog: Any) -> None:
    _sqlite_outage(
        tmp_path,
        # SQLite raises a smaller limit to the current size: the file may not grow, so the
        # next commit that needs a new page fails (each event's 8 KiB metadata needs some).
        "PRAGMA max_page_count = 1",
        "PRAGMA max_page_count = 1073741823",
        "database or disk is full", caplog,
    )  # fmt: skip
