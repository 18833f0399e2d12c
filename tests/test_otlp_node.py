"""A real non-Python sender: Node's OpenTelemetry SDK (`@opentelemetry/sdk-trace-node`)
with `@opentelemetry/exporter-trace-otlp-http` (JSON) and `-proto`, from the npm
registry, posting spans shaped as the Vercel AI SDK makes them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from _binaries import in_ci
from _server import scrape, server_process

HERE = Path(__file__).resolve().parent
PACKAGES = (
    "@opentelemetry/api@1",
    "@opentelemetry/sdk-trace-node@2",
    "@opentelemetry/sdk-trace-base@2",
    "@opentelemetry/resources@2",
    "@opentelemetry/exporter-trace-otlp-http@0",
    "@opentelemetry/exporter-trace-otlp-proto@0",
)
TOKEN = "node-write-token"


def _need(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message} (CI=true, so this is an error, not a skip)")
    pytest.skip(message)


def node_modules() -> Path:
    """The npm packages, installed once into a cache directory the test owns."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        _need(
            "node and npm are needed for the Node OTLP sender test (Debian: apt-get install nodejs npm)"
        )
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = cache / "ai-usage-exporter-tests" / "node-otlp"
    marker = root / ".installed"
    if not marker.exists() or marker.read_text() != "\n".join(PACKAGES):
        root.mkdir(parents=True, exist_ok=True)
        (root / "package.json").write_text('{"private": true, "type": "module"}\n')
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES],
            cwd=root, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0:
            _need(f"npm install failed: {proc.stderr[-2000:]}")
        marker.write_text("\n".join(PACKAGES))
    return root


def totals(samples: dict[Any, float], name: str, by: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name:
            key = dict(labels).get(by, "")
            out[key] = out.get(key, 0.0) + v
    return out


def test_node_sdk_with_vercel_ai_spans_counts_each_call_once(tmp_path: Path) -> None:
    root = node_modules()
    script = root / "vercel_ai_spans.mjs"
    shutil.copyfile(HERE / "node" / "vercel_ai_spans.mjs", script)
    with server_process(tmp_path / "l.db", env={"AI_USAGE_EXPORTER_WRITE_TOKEN": TOKEN}) as s:
        for protocol in ("http", "proto"):
            proc = subprocess.run(
                ["node", str(script), f"{s.url}/v1/traces", TOKEN, protocol],
                cwd=root, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
        samples = scrape(s.url, {"authorization": f"Bearer {TOKEN}"})
    tokens = totals(samples, "ai_tokens_total", "type")
    # Per protocol: OpenAI 2006/300; Anthropic 8 + 10426 cache writes in, 501 out.
    assert tokens["input"] == 2 * (2006 + 8 + 10426)
    assert tokens["output"] == 2 * (300 + 501)
    assert tokens["cache_write"] == 2 * 10426
    assert totals(samples, "ai_requests_total", "service") == {
        "next-app-http": 2,
        "next-app-proto": 2,
    }
    assert totals(samples, "ai_requests_total", "provider") == {"openai": 2, "anthropic": 2}
    outcomes = totals(samples, "ai_exporter_otlp_spans_total", "outcome")
    assert (outcomes["counted"], outcomes["aggregate"]) == (4, 4)
