"""Slow senders cannot hold the sidecar's connections: a body that does not arrive in
time gets 408 and the connection is closed, connections beyond the cap get 503, and
normal clients are served meanwhile."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from _server import ServerProcess, scrape
from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.settings import resolve
from ai_usage_exporter.server.bodytimeout import BodyTimeoutMiddleware

EVENT = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5}
HEAD = (
    b"POST /api/usage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 200\r\n\r\n"
)


def _slow_sender(port: int) -> socket.socket:
    """Headers and the start of a 200-byte body, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(HEAD + b'{"provider": "open')
    return s


def _answer(s: socket.socket) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection, and whether it did."""
    s.settimeout(10)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    return data, True


def test_slow_bodies_get_408_and_lose_their_connection_while_others_are_served(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "s.db", ["--body-timeout", "1.5"])
    try:
        slow = [_slow_sender(server.port) for _ in range(50)]
        trickle = _slow_sender(server.port)
        t0 = time.monotonic()
        # Held bodies take no one's turn: normal clients are answered at once.
        with httpx.Client(base_url=server.url, timeout=5) as client:
            for i in range(10):
                r = client.post("/api/usage", json={**EVENT, "idempotency_key": f"k{i}"})
                assert r.json() == {"accepted": 1, "duplicates": 0}
        assert time.monotonic() - t0 < 1.5
        # A byte now and then does not extend the deadline: it counts from the start.
        for _ in range(4):
            time.sleep(0.3)
            trickle.sendall(b"a")
        answers = [_answer(s) for s in [*slow, trickle]]
        elapsed = time.monotonic() - t0
        assert 1.5 <= elapsed < 8
        for data, closed in answers:
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), data
            assert b"connection: close" in head.lower()
            assert body == (
                b'{"error":{"message":"request body not received within 1.5 s; '
                b'send the whole body at once"}}'
            )
            assert closed
        for s in [*slow, trickle]:
            s.close()
        samples = scrape(server.url)
        key = ("ai_exporter_events_rejected_total", frozenset({("reason", "body_timeout")}))
        assert samples[key] == 51
        # Nothing of a cut-off body was stored.
        total = ("ai_exporter_events_accepted_total", frozenset[tuple[str, str]]())
        assert samples[total] == 10
    finally:
        server.kill()


def test_connections_beyond_the_cap_get_503_and_clients_are_served_once_they_go(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "s.db", ["--max-connections", "20", "--body-timeout", "60"])
    try:
        held = [_slow_sender(server.port) for _ in range(19)]
        time.sleep(0.3)
        # At the cap every further request is answered 503 and closed, not held.
        beyond = [_slow_sender(server.port) for _ in range(10)]
        for s in beyond:
            data, closed = _answer(s)
            assert data.startswith(b"HTTP/1.1 503 "), data
            assert closed
            s.close()
        r = httpx.post(f"{server.url}/api/usage", json=EVENT, timeout=5)
        assert r.status_code == 503
        for s in held:
            s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = httpx.post(f"{server.url}/api/usage", json=EVENT, timeout=5)
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.json() == {"accepted": 1, "duplicates": 0}
    finally:
        server.kill()


def test_settings_from_flags_environment_and_file(tmp_path: Path) -> None:
    assert (resolve({}, {}).body_timeout, resolve({}, {}).max_connections) == (30.0, 1000)
    config = tmp_path / "c.yml"
    config.write_text("body_timeout: 12.5\nmax_connections: 300\n")
    s = resolve({"config": str(config)}, {})
    assert (s.body_timeout, s.max_connections) == (12.5, 300)
    env = {"AI_USAGE_EXPORTER_BODY_TIMEOUT": "7", "AI_USAGE_EXPORTER_MAX_CONNECTIONS": "50"}
    s = resolve({"config": str(config)}, env)
    assert (s.body_timeout, s.max_connections) == (7.0, 50)
    s = resolve({"config": str(config), "body_timeout": 3.0, "max_connections": 9}, env)
    assert (s.body_timeout, s.max_connections) == (3.0, 9)
    config.write_text("body_timeout: 0\n")
    with pytest.raises(ConfigError, match=r"c.yml:1: expected a number of seconds > 0, got 0"):
        resolve({"config": str(config)}, {})
    with pytest.raises(ConfigError, match=r"MAX_CONNECTIONS: must be >= 1, got 0"):
        resolve({}, {"AI_USAGE_EXPORTER_MAX_CONNECTIONS": "0"})


def test_a_complete_body_is_never_timed_out_afterwards() -> None:
    # The deadline covers receiving the body only: a response streamed for longer, and
    # the wait for a disconnect that goes with it, are left alone.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert await receive() == {"type": "http.request", "body": b"x", "more_body": False}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        assert await receive() == {"type": "http.disconnect"}
        await send({"type": "http.response.body", "body": b"done"})

    sent: list[dict[str, Any]] = []
    queue: list[Message] = [{"type": "http.request", "body": b"x", "more_body": False}]

    async def receive() -> Message:
        if queue:
            return queue.pop()
        await asyncio.sleep(0.3)  # longer than the timeout
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(dict(message))

    asyncio.run(BodyTimeoutMiddleware(app, 0.1)({"type": "http"}, receive, send))
    assert [m.get("status", m.get("body")) for m in sent] == [200, b"done"]
