"""Claude Code and Gemini CLI (from npm) through the gateway, offline.

Each is pointed at the sidecar with the two variables the README gives (a base URL and
the gateway client token as its key); the gateway's only upstream is a local fake
answering with a recorded stream, so nothing leaves the machine. Each program is found
on PATH, at AI_USAGE_EXPORTER_TEST_CLAUDE / AI_USAGE_EXPORTER_TEST_GEMINI, or where
.ci/run installs it (.ci/npm); missing, its test skips, or fails when CI=true.
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from _fake_native import ANTHROPIC_STREAM_BASIC, fake_native

from _binaries import in_ci
from _server import scrape, serve_app
from ai_usage_exporter.config.gateway import parse_gateway
from ai_usage_exporter.gateway.calllog import CallLogger
from ai_usage_exporter.gateway.proxy import Gateway
from ai_usage_exporter.recorder.recorder import Recorder
from ai_usage_exporter.server import create_app

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_KEY = "sk-ant-api03-upstreamTESTKEY000111222"
GEMINI_UPSTREAM_KEY = "AIzaSyUPSTREAMTESTKEY000111222333444"
TOKENS = {"alice": "gw-alice-token-1", "bob": "gw-bob-token-2"}


def _program(name: str, package: str, variable: str) -> str:
    for candidate in (
        os.environ.get(variable),
        shutil.which(name),
        str(ROOT / ".ci" / "npm" / "node_modules" / ".bin" / name),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = f"{name} not found: npm install {package} (or set {variable} to its `{name}`)"
    if in_ci():
        pytest.fail(f"{message} (CI=true, so this is an error, not a skip)")
    pytest.skip(message)


def test_claude_code_print_mode_through_the_gateway(tmp_path: Path) -> None:
    claude = _program("claude", "@anthropic-ai/claude-code", "AI_USAGE_EXPORTER_TEST_CLAUDE")
    with fake_native("anthropic", anthropic_stream=ANTHROPIC_STREAM_BASIC) as upstream:
        config = parse_gateway(
            {
                "upstreams": {
                    "anthropic": {
                        "provider": "anthropic",
                        "api": "anthropic",
                        "base_url": upstream.url,
                        "api_key_env": "ANTHROPIC_KEY",
                    }  # fmt: skip
                },
                "client_tokens": list(TOKENS.values()),
            },
            "test",
        )
        db = tmp_path / "gw.db"
        recorder = Recorder(str(db))
        log = io.StringIO()
        gateway = Gateway(config, recorder, keys={"anthropic": UPSTREAM_KEY},
                          logger=CallLogger(log, secrets=[UPSTREAM_KEY]))  # fmt: skip
        app = create_app(
            recorder, gateway=gateway, gateway_tokens=config.client_tokens, close_recorder=True
        )
        with serve_app(app) as url:
            home = tmp_path / "home"
            home.mkdir()
            outputs = []
            # Alice with an auth token (Authorization: Bearer), Bob with an API key
            # (x-api-key): the two ways Claude Code sends a key.
            for developer, variable in (("alice", "ANTHROPIC_AUTH_TOKEN"), ("bob", "ANTHROPIC_API_KEY")):  # fmt: skip
                env = {
                    "PATH": os.environ.get("PATH", ""),
                    "HOME": str(home),
                    "ANTHROPIC_BASE_URL": url,
                    variable: TOKENS[developer],
                    # No update checks, telemetry or error reports: only the model calls.
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                }
                done = subprocess.run(
                    [claude, "-p", "Say hello", "--model", "claude-sonnet-4-5"],
                    env=env, cwd=home, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
                outputs.append(done.stdout.strip())
            assert outputs == ["Hello there!", "Hello there!"]
            messages = [r for r in upstream.requests if r["path"] == "/v1/messages"]
            assert messages and all(r["query"] == "beta=true" for r in messages)
            for r in upstream.requests:
                assert r["headers"]["x-api-key"] == UPSTREAM_KEY
                assert "authorization" not in r["headers"]
                assert r["headers"]["anthropic-version"] == "2023-06-01"
            deadline = time.monotonic() + 10
            while True:
                recorder.flush(10)
                with sqlite3.connect(db) as conn:
                    rows = conn.execute(
                        "SELECT provider, model, service, operation, status, input_tokens, "
                        "output_tokens FROM events"
                    ).fetchall()
                if len(rows) >= len(messages) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert rows == [
                ("anthropic", "claude-3-opus-latest", "anthropic", "chat", "ok", 11, 6)
            ] * len(messages)
            labels = {"type": "input", "service": "anthropic", "provider": "anthropic",
                      "model": "claude-3-opus-latest"}  # fmt: skip
            assert scrape(url)[("ai_tokens_total", frozenset(labels.items()))] == 11 * len(messages)
            for token in (*TOKENS.values(), UPSTREAM_KEY):
                assert token not in log.getvalue()


def test_gemini_cli_headless_through_the_gateway(tmp_path: Path) -> None:
    gemini = _program("gemini", "@google/gemini-cli", "AI_USAGE_EXPORTER_TEST_GEMINI")
    token = TOKENS["alice"]
    with fake_native("gemini") as upstream:
        config = parse_gateway(
            {
                "upstreams": {
                    "gemini": {
                        "provider": "google",
                        "api": "gemini",
                        "base_url": upstream.url,
                        "api_key_env": "GEMINI_KEY",
                    }  # fmt: skip
                },
                "client_tokens": [token],
            },
            "test",
        )
        db = tmp_path / "gw.db"
        recorder = Recorder(str(db))
        log = io.StringIO()
        gateway = Gateway(config, recorder, keys={"gemini": GEMINI_UPSTREAM_KEY},
                          logger=CallLogger(log, secrets=[GEMINI_UPSTREAM_KEY]))  # fmt: skip
        app = create_app(
            recorder, gateway=gateway, gateway_tokens=config.client_tokens, close_recorder=True
        )
        with serve_app(app) as url:
            home = tmp_path / "home"
            (home / ".gemini").mkdir(parents=True)
            # What choosing "Use Gemini API key" in the CLI's /auth writes.
            (home / ".gemini" / "settings.json").write_text(
                '{"security": {"auth": {"selectedType": "gemini-api-key"}}}'
            )
            env = {
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(home),
                "GOOGLE_GEMINI_BASE_URL": url,
                "GEMINI_API_KEY": token,
                # Headless in a directory it has not been told to trust.
                "GEMINI_CLI_TRUST_WORKSPACE": "true",
            }
            done = subprocess.run(
                [gemini, "-p", "Count to 30", "-m", "gemini-2.5-flash"],
                env=env, cwd=home, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert done.stdout.split() == [str(n) for n in range(1, 31)]
            calls = [r for r in upstream.requests if r["path"].endswith(":streamGenerateContent")]
            assert calls and all(r["query"] == "alt=sse" for r in calls)
            for r in upstream.requests:
                assert r["headers"]["x-goog-api-key"] == GEMINI_UPSTREAM_KEY
                assert token not in orjson.dumps([r["headers"], r["query"]]).decode()
            deadline = time.monotonic() + 10
            while True:
                recorder.flush(10)
                with sqlite3.connect(db) as conn:
                    rows = conn.execute(
                        "SELECT provider, model, service, status, input_tokens, output_tokens, "
                        "reasoning_tokens FROM events"
                    ).fetchall()
                if len(rows) >= len(calls) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert rows == [("google", "gemini-2.5-flash", "gemini", "ok", 18, 115, 35)] * len(
                calls
            )
            assert token not in log.getvalue() and GEMINI_UPSTREAM_KEY not in log.getvalue()
