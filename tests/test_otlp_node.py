"""Real non-Python senders: Node's OpenTelemetry SDK (`@opentelemetry/sdk-trace-node`)
with `@opentelemetry/exporter-trace-otlp-http` (JSON) and `-proto`, from the npm
registry, posting spans shaped as the Vercel AI SDK makes them; and the real AI SDK
with both of its OpenTelemetry integrations, calling the fake provider, set up as the
README's Node setup is (`@opentelemetry/sdk-node`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from _binaries import in_ci
from _fake_provider import ANTHROPIC_DELTA_USAGE, OPENAI_CHAT_USAGE
from _sdk import fake_provider
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
# In a directory of their own: npm's resolver spins for minutes on these beside the
# 2.x trace SDK packages above.
AI_SDK_PACKAGES = (
    "@opentelemetry/api@1",
    "@opentelemetry/sdk-node@0",
    "@opentelemetry/exporter-trace-otlp-proto@0",
    "ai@7",
    "@ai-sdk/otel@1",
    "@ai-sdk/openai@4",
    "@ai-sdk/anthropic@4",
)
TOKEN = "node-write-token"


def _need(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message} (CI=true, so this is an error, not a skip)")
    pytest.skip(message)


def node_modules(name: str = "node-otlp", packages: tuple[str, ...] = PACKAGES) -> Path:
    """The npm packages, installed once into a cache directory the test owns."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        _need(
            "node and npm are needed for the Node OTLP sender test (Debian: apt-get install nodejs npm)"
        )
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = cache / "ai-usage-exporter-tests" / name
    marker = root / ".installed"
    if not marker.exists() or marker.read_text() != "\n".join(packages):
        root.mkdir(parents=True, exist_ok=True)
        (root / "package.json").write_text('{"private": true, "type": "module"}\n')
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *packages],
            cwd=root, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0:
            _need(f"npm install failed: {proc.stderr[-2000:]}")
        marker.write_text("\n".join(packages))
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


def test_the_real_ai_sdk_with_both_telemetry_integrations_counts_to_the_token(
    tmp_path: Path,
) -> None:
    root = node_modules("node-ai-sdk", AI_SDK_PACKAGES)
    script = root / "ai_sdk_real.mjs"
    shutil.copyfile(HERE / "node" / "ai_sdk_real.mjs", script)
    env = {"AI_USAGE_EXPORTER_WRITE_TOKEN": TOKEN}
    with fake_provider() as provider, server_process(tmp_path / "l.db", env=env) as s:
        for integration in ("legacy", "semconv"):
            proc = subprocess.run(
                ["node", str(script), f"{s.url}/v1/traces", TOKEN, provider, integration],
                cwd=root, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
        samples = scrape(s.url, {"authorization": f"Bearer {TOKEN}"})
    o, d = OPENAI_CHAT_USAGE, ANTHROPIC_DELTA_USAGE
    per_run = {
        # openai.chat: prompt_tokens holds the cached part; Anthropic's stream reports
        # the cache writes beside its input, and the AI SDK 7 adds them in.
        "input": o["prompt_tokens"] + d["input_tokens"] + d["cache_creation_input_tokens"],
        "output": o["completion_tokens"] + d["output_tokens"],
        "cached_input": o["prompt_tokens_details"]["cached_tokens"],
        "cache_write": d["cache_creation_input_tokens"],
    }
    tokens = totals(samples, "ai_tokens_total", "type")
    assert {k: tokens[k] for k in per_run} == {k: 2 * v for k, v in per_run.items()}
    assert totals(samples, "ai_requests_total", "service") == {
        "next-app-legacy": 2,
        "next-app-semconv": 2,
    }
    assert totals(samples, "ai_requests_total", "provider") == {"openai": 2, "anthropic": 2}
    outcomes = totals(samples, "ai_exporter_otlp_spans_total", "outcome")
    assert outcomes["counted"] == 4
