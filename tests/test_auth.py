"""Bearer tokens on a real `serve` process, and the refusal to listen openly without one."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _server import ServerProcess, free_port, server_process, wait_healthy

WRITE = "write-token-0123456789"
READ = "read-token-9876543210"
EVENT = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 7, "output_tokens": 3}
UNAUTHORIZED_BODIES = {
    "missing": {
        "error": {"message": "this endpoint needs an Authorization: Bearer <token> header"}
    },
    "wrong": {"error": {"message": "the bearer token is not valid for this endpoint"}},
}


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM events").fetchone()
    conn.close()
    return int(n)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"AI_USAGE_EXPORTER_WRITE_TOKEN": WRITE, "AI_USAGE_EXPORTER_READ_TOKEN": READ}
    with server_process(tmp_path / "auth.db", env=env) as proc:
        yield proc


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "missing"),
        ({"authorization": "Bearer"}, "missing"),
        ({"authorization": f"Basic {WRITE}"}, "missing"),
        (_bearer("not-the-token"), "wrong"),
        (_bearer(WRITE + "x"), "wrong"),
        (_bearer(READ), "wrong"),
    ],
    ids=["none", "empty-bearer", "basic-scheme", "wrong", "token-prefix", "read-token"],
)
def test_write_path_refuses_without_the_write_token(
    server: ServerProcess, headers: dict[str, str], expected: str
) -> None:
    r = httpx.post(f"{server.url}/api/usage", json=EVENT, headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    assert r.headers["www-authenticate"] == 'Bearer realm="ai-usage-exporter"'
    assert r.json() == UNAUTHORIZED_BODIES[expected]
    assert _rows(Path(server.db)) == 0
    metrics = httpx.get(f"{server.url}/metrics", headers=_bearer(READ)).text
    assert "ai_requests_total{" not in metrics
    assert "ai_exporter_events_accepted_total 0.0" in metrics


@pytest.mark.parametrize("path", ["/metrics", "/api/metrics", "/api/metrics?format=prometheus"])
@pytest.mark.parametrize(
    ("headers", "expected"),
    [({}, "missing"), (_bearer("nope"), "wrong"), (_bearer(WRITE), "wrong")],
    ids=["none", "wrong", "write-token"],
)
def test_read_paths_refuse_without_the_read_token(
    server: ServerProcess, path: str, headers: dict[str, str], expected: str
) -> None:
    assert httpx.post(f"{server.url}/api/usage", json=EVENT, headers=_bearer(WRITE)).json() == {
        "accepted": 1,
        "duplicates": 0,
    }
    r = httpx.get(f"{server.url}{path}", headers=headers)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED_BODIES[expected]
    assert "gpt-4o-mini" not in r.text


def test_right_tokens_write_and_read(server: ServerProcess) -> None:
    r = httpx.post(f"{server.url}/api/usage", json=EVENT, headers=_bearer(WRITE))
    assert r.status_code == 200
    assert r.json() == {"accepted": 1, "duplicates": 0}
    assert _rows(Path(server.db)) == 1

    metrics = httpx.get(f"{server.url}/metrics", headers=_bearer(READ))
    assert metrics.status_code == 200
    assert (
        'ai_tokens_total{type="input",service="default",provider="openai",model="gpt-4o-mini"} 7.0'
        in metrics.text
    )
    view = httpx.get(f"{server.url}/api/metrics", headers=_bearer(READ))
    assert view.status_code == 200
    assert view.json()["totals"]["requests"] == 1
    # The scheme name is case-insensitive (RFC 7235).
    lower = httpx.get(f"{server.url}/metrics", headers={"authorization": f"bearer {READ}"})
    assert lower.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
def test_probes_and_schema_stay_open(server: ServerProcess, path: str) -> None:
    assert httpx.get(f"{server.url}{path}").status_code == 200


def test_refused_requests_are_counted(server: ServerProcess) -> None:
    httpx.post(f"{server.url}/api/usage", json=EVENT)
    httpx.get(f"{server.url}/metrics", headers=_bearer(WRITE))
    text = httpx.get(f"{server.url}/metrics", headers=_bearer(READ)).text
    assert 'ai_exporter_events_rejected_total{reason="unauthorized"} 2.0' in text


def _serve(args: list[str], db: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "ai_usage_exporter", "serve", "--db", str(db), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_serve_refuses_a_public_address_without_a_write_token(tmp_path: Path) -> None:
    proc = _serve(["--host", "0.0.0.0", "--port", str(free_port())], tmp_path / "open.db")
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2
    assert out == b""
    assert err.decode() == (
        "ai-usage-exporter: refusing to listen on 0.0.0.0 without a write token: anyone who "
        "can reach it could write usage. Set AI_USAGE_EXPORTER_WRITE_TOKEN (and READ_TOKEN), "
        "or pass --allow-unauthenticated if the network is trusted.\n"
    )
    assert not (tmp_path / "open.db").exists()


def test_serve_listens_publicly_with_allow_unauthenticated(tmp_path: Path) -> None:
    port = free_port()
    args = ["--host", "0.0.0.0", "--port", str(port), "--allow-unauthenticated"]
    proc = _serve(args, tmp_path / "open.db")
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=30)
        r = httpx.post(f"http://127.0.0.1:{port}/api/usage", json=EVENT)
        assert r.json() == {"accepted": 1, "duplicates": 0}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
