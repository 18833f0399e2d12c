"""Malformed and hostile requests against a real `serve` process: each gets an exact 4xx
with a JSON error body, and none of them changes the ledger or any counter."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from _binaries import require_binary
from _server import SampleKey, ServerProcess, exposition_samples, scrape, server_process
from ai_usage_exporter.core.events.model import DEFAULT_LIMITS

JSON = {"content-type": "application/json"}
LEGACY_GAUGE = "ai_average_duration_ms"
VALID: dict[str, Any] = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10}


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _event(**fields: Any) -> bytes:
    return _json({**VALID, **fields})


def _nested(depth: int) -> bytes:
    return b'{"provider":"openai","model":"m","metadata":' + b"[" * depth + b"]" * depth + b"}"


CORPUS: tuple[Case, ...] = (
    # Not JSON at all.
    Case("malformed-json", 400, b'{"provider": "openai", "model": '),
    Case("trailing-garbage", 400, _event() + b"}}"),
    Case("invalid-utf8", 400, b'{"provider": "openai", "model": "gpt\xff\xfe"}'),
    Case("nan-literal", 400, b'{"provider":"openai","model":"m","input_tokens":NaN}'),
    Case("infinity-literal", 400, b'{"provider":"openai","model":"m","duration_ms":Infinity}'),
    Case("duration-nan-literal", 400, b'{"provider":"openai","model":"m","duration_ms":NaN}'),
    Case("lone-surrogate", 400, b'{"provider":"openai","model":"gpt\\ud800"}'),
    Case("lone-low-surrogate", 400, b'{"provider":"openai","model":"\\udfff"}'),
    Case("empty-body", 400, b""),
    Case("whitespace-body", 400, b"  \n "),
    Case("deep-nesting", 400, _nested(5000)),
    # JSON, but no events or not events.
    Case("empty-array", 422, b"[]"),
    Case("json-null", 422, b"null"),
    Case("json-string", 422, b'"openai"'),
    Case("array-of-numbers", 422, b"[1, 2, 3]"),
    Case("too-many-events", 422, _json([VALID] * (DEFAULT_LIMITS.max_events_per_request + 1))),
    # Wrong types and values.
    Case("bool-as-count", 422, _event(input_tokens=True)),
    Case("bool-as-duration", 422, _event(duration_ms=False)),
    Case("negative-count", 422, _event(output_tokens=-1)),
    Case("huge-count", 422, _event(input_tokens=10**30)),
    Case("over-max-tokens", 422, _event(input_tokens=DEFAULT_LIMITS.max_tokens + 1)),
    Case("fractional-count", 422, _event(input_tokens=1.5)),
    Case("float-count", 422, _event(input_tokens=2.0)),
    Case("string-count", 422, _event(input_tokens="10")),
    Case("duration-nan-string", 422, _event(duration_ms="NaN")),
    Case("duration-negative", 422, _event(duration_ms=-5)),
    Case("duration-huge", 422, _event(duration_ms=1e300)),
    Case("cost-negative", 422, _event(cost_usd=-0.01)),
    Case("status-unknown", 422, _event(status="maybe")),
    # Unknown fields, missing fields, junk.
    Case("unknown-field", 422, _event(prompt_token=5)),
    Case("unknown-field-quoted", 422, _json({**VALID, 'mo"del\\': "x"})),
    Case("missing-model", 422, _json({"provider": "openai"})),
    Case("model-null", 422, _event(model=None)),
    Case("nested-junk-provider", 422, _event(provider={"a": [1, {"b": None}]})),
    Case("nested-junk-model", 422, _event(model=[["gpt"]])),
    Case("usage-not-object", 422, _json({"provider": "openai", "model": "m", "usage": [1, 2]})),
    Case("usage-unknown-shape", 422, _json({"provider": "openai", "model": "m", "usage": {}})),
    # Hostile strings.
    Case("model-10kb", 422, _event(model="m" * 10_240)),
    Case("model-newline", 422, _event(model="gpt\n4")),
    Case("model-carriage-return", 422, _event(model="gpt\r4")),
    Case("model-nul", 422, _event(model="gpt\x004")),
    Case("model-escape", 422, _event(model="\x1b[31mred")),
    Case("model-del", 422, _event(model="gpt\x7f")),
    Case("model-c1-control", 422, _event(model="gpt\x85")),
    Case("model-empty", 422, _event(model="")),
    Case("quotes-and-newline", 422, _event(service='a"b\\c\nd')),
    Case("tenant-over-length", 422, _event(tenant="t" * (DEFAULT_LIMITS.max_string_length + 1))),
    # Size limits.
    Case(
        "metadata-over-limit",
        422,
        _event(metadata={"blob": "x" * DEFAULT_LIMITS.max_metadata_bytes}),
    ),
    Case("metadata-not-object", 422, _event(metadata=["a"])),
    # Timestamps.
    Case("timestamp-unparsable", 422, _event(timestamp="yesterday")),
    Case("timestamp-no-offset", 422, _event(timestamp="2026-01-01T00:00:00")),
    Case("timestamp-far-past", 422, _event(timestamp="1970-01-01T00:00:00Z")),
    Case("timestamp-far-future", 422, _event(timestamp="2999-01-01T00:00:00Z")),
    Case("timestamp-epoch-huge", 422, _event(timestamp=1e20)),
    Case("timestamp-bool", 422, _event(timestamp=True)),
    # Inconsistent counts.
    Case(
        "usage-and-flat",
        422,
        _json(
            {
                "provider": "openai",
                "model": "m",
                "input_tokens": 5,
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            }
        ),
    ),
    Case("cached-over-input", 422, _event(input_tokens=10, cached_input_tokens=11)),
    Case("reasoning-over-output", 422, _event(output_tokens=1, reasoning_tokens=2)),
    Case("alias-and-canonical", 422, _event(prompt_tokens=3)),
    Case("total-without-split", 422, _json({"provider": "p", "model": "m", "total_tokens": 9})),
    Case("mixed-valid-invalid", 422, _json([VALID, {**VALID, "input_tokens": -1}])),
    Case("summary-empty-inferences", 422, _json({"event": "token_usage_summary"})),
    # Transport-level refusals.
    Case("content-type-text", 415, _event(), {"content-type": "text/plain"}),
    Case("content-type-form", 415, _event(), {"content-type": "application/x-www-form-urlencoded"}),
    Case("ndjson-malformed-line", 400, _event() + b"\n{nope\n", {"content-type": "application/x-ndjson"}),
)  # fmt: skip


def _ledger_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM events").fetchone()
    conn.close()
    return int(n)


def _counters(samples: dict[SampleKey, float]) -> dict[SampleKey, float]:
    return {k: v for k, v in samples.items() if k[0] != "ai_exporter_events_rejected_total"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("hostile") / "ledger.db"
    with server_process(db) as proc:
        yield proc


def _assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


def test_hostile_corpus_is_refused_and_changes_nothing(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/api/usage", json=VALID).status_code == 200
        rows_before = _ledger_rows(Path(server.db))
        counters_before = _counters(scrape(server.url))

        outcomes = {}
        for case in CORPUS:
            r = client.post("/api/usage", content=case.body, headers=case.headers)
            outcomes[case.id] = r.status_code
            _assert_error(r, case.status)
        assert outcomes == {c.id: c.status for c in CORPUS}

        assert _ledger_rows(Path(server.db)) == rows_before
        assert _counters(scrape(server.url)) == counters_before
        r = client.post("/api/usage", json={**VALID, "model": "still-alive"})
        assert r.json() == {"accepted": 1, "duplicates": 0}
        assert _ledger_rows(Path(server.db)) == rows_before + 1


def test_invalid_events_are_reported_with_field_details(server: ServerProcess) -> None:
    r = httpx.post(
        f"{server.url}/api/usage",
        json=[VALID, {**VALID, "input_tokens": -1, "prompt_token": 1}, {**VALID, "model": ""}],
    )
    body = _assert_error(r, 422)
    assert body["error"]["details"] == [
        {"index": 1, "field": "prompt_token", "message": body["error"]["details"][0]["message"]},
        {"index": 2, "field": "model", "message": "must not be empty"},
    ]
    assert "unknown field 'prompt_token'" in body["error"]["details"][0]["message"]


def test_body_over_the_size_limit_is_413(server: ServerProcess) -> None:
    limit = DEFAULT_LIMITS.max_body_bytes
    pad = b" " * (limit + 1 - len(_event()))
    oversized = _event() + pad
    rows_before = _ledger_rows(Path(server.db))

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the server must count the bytes as they stream in.
        for i in range(0, len(oversized), 1 << 20):
            yield oversized[i : i + (1 << 20)]

    with httpx.Client(base_url=server.url, timeout=30) as client:
        _assert_error(client.post("/api/usage", content=oversized, headers=JSON), 413)
        _assert_error(client.post("/api/usage", content=chunks(), headers=JSON), 413)
        # A body of exactly the limit is read (and this one is valid JSON).
        assert client.post("/api/usage", content=oversized[:-1], headers=JSON).status_code == 200
    assert _ledger_rows(Path(server.db)) == rows_before + 1


# ---------------------------------------------------------------- label safety

ODD_LABELS: tuple[str, ...] = (
    'say "hi"',
    "back\\slash",
    "ends with backslash\\",
    '\\"',
    "\\n is not a newline",
    "emoji 🚀🧪 and 👩\u200d💻",
    "ünïcödé – “quotes” ‘too’",
    "{braces},commas=equals",
    "x" * DEFAULT_LIMITS.max_label_length,
    " leading and trailing spaces ",
    "#not a comment",
)


def test_odd_label_values_round_trip_through_the_exposition(tmp_path: Path) -> None:
    with server_process(tmp_path / "labels.db") as server:
        events = [
            {"provider": "openai", "model": m, "service": m, "operation": m, "input_tokens": 3}
            for m in ODD_LABELS
        ]
        r = httpx.post(f"{server.url}/api/usage", json=events)
        assert r.json() == {"accepted": len(ODD_LABELS), "duplicates": 0}
        samples = scrape(server.url)

    for m in ODD_LABELS:
        labels = {"service": m, "provider": "openai", "model": m}
        key = ("ai_tokens_total", frozenset({**labels, "type": "input"}.items()))
        assert samples[key] == 3.0
        key = ("ai_requests_total", frozenset({**labels, "operation": m, "status": "ok"}.items()))
        assert samples[key] == 1.0
    models = {dict(k[1]).get("model") for k in samples if k[0] == "ai_tokens_total"}
    assert models == set(ODD_LABELS)


def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    with server_process(tmp_path / "promtool.db") as server:
        events = [
            {
                "provider": "openai",
                "model": m,
                "service": m,
                "input_tokens": 5,
                "output_tokens": 2,
                "duration_ms": 120.5,
                "ttft_ms": 30,
            }
            for m in ODD_LABELS
        ]
        events.append({"provider": "nobody", "model": "unpriced-model", "status": "error"})
        assert httpx.post(f"{server.url}/api/usage", json=events).status_code == 200
        httpx.post(f"{server.url}/api/usage", content=b"{", headers=JSON)
        text = httpx.get(f"{server.url}/metrics").text
    assert exposition_samples(text)  # parses
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    # Exit 1 is a parse error; 3 means only lint findings. The one finding is the legacy
    # gauge kept under its old name for existing dashboards.
    output = (result.stdout + result.stderr).decode().strip()
    assert output == f"{LEGACY_GAUGE} metric names should not contain abbreviated units"
    assert result.returncode == 3
