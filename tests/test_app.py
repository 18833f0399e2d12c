"""End-to-end: the real `serve` process over HTTP, checked against sums of what was posted."""

from __future__ import annotations

import gzip
import random
import sqlite3
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from _binaries import require_binary
from _server import SampleKey, exposition_samples, scrape, server_process

TOKEN_TYPES = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "reasoning",
    "audio_input",
    "audio_output",
    "cache_write_1h",
    "image_input",
    "image_output",
    "cached_audio_input",
    "cached_image_input",
    "video_input",
    "video_output",
    "cached_video_input",
)


class Expected:
    """Sums computed from the posted events, independently of the exporter's code."""

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self.requests: Counter[tuple[str, str, str, str, str]] = Counter()
        self.levels: Counter[str] = Counter()

    def add(
        self,
        service: str,
        provider: str,
        model: str,
        operation: str,
        status: str,
        level: str,
        counts: dict[str, int],
    ) -> None:
        for t in TOKEN_TYPES:
            self.tokens[(t, service, provider, model)] += counts.get(t, 0)
        self.tokens[("total", service, provider, model)] += counts["input"] + counts["output"]
        self.requests[(service, provider, model, operation, status)] += 1
        self.levels[level] += 1

    def samples(self) -> dict[SampleKey, float]:
        out: dict[SampleKey, float] = {}
        for (t, service, provider, model), v in self.tokens.items():
            out[
                (
                    "ai_tokens_total",
                    frozenset(
                        {
                            ("type", t),
                            ("service", service),
                            ("provider", provider),
                            ("model", model),
                        }
                    ),
                )
            ] = float(v)
        for (service, provider, model, op, status), n in self.requests.items():
            labels = {
                ("service", service),
                ("provider", provider),
                ("model", model),
                ("operation", op),
                ("status", status),
            }
            out[("ai_requests_total", frozenset(labels))] = float(n)
        for level in ("debug", "info", "warn", "error"):
            out[("ai_requests_by_level_total", frozenset({("level", level)}))] = float(
                self.levels[level]
            )
        return out


def _counts(rng: random.Random, *, cache_write: bool, audio: bool) -> dict[str, int]:
    inp = rng.randint(0, 20_000)
    out = rng.randint(0, 4_000)
    cached = rng.randint(0, inp // 2)
    write = rng.randint(0, inp - cached) if cache_write else 0
    reasoning = rng.randint(0, out // 2)
    return {
        "input": inp,
        "output": out,
        "cached_input": cached,
        "cache_write": write,
        "reasoning": reasoning,
        "audio_input": rng.randint(0, inp - cached) if audio else 0,
        "audio_output": rng.randint(0, out - reasoning) if audio else 0,
    }


def mixed_events(n: int, seed: int = 1) -> tuple[list[dict[str, Any]], Expected]:
    """`n` usage events in every accepted shape (the last two from one query summary), and their sums."""
    rng = random.Random(seed)
    expected = Expected()
    events: list[dict[str, Any]] = []
    for i in range(n - 2):
        shape = ("flat", "openai", "anthropic", "gemini")[i % 4]
        service = rng.choice(["chat", "rag", "agents"])
        status = "error" if rng.random() < 0.1 else "ok"
        level = rng.choice([None, "debug", "info", "warn", "error"])
        operation = rng.choice(["chat", "completion", "embedding"])
        event: dict[str, Any] = {"service": service, "operation": operation, "status": status,
                                 "duration_ms": rng.uniform(5, 90_000), "idempotency_key": f"ev-{seed}-{i}"}  # fmt: skip
        if level is not None:
            event["level"] = level
        if rng.random() < 0.3:
            event["ttft_ms"] = rng.uniform(50, 3000)
        if shape == "flat":
            provider, model = rng.choice(
                [
                    ("openai", "gpt-4o-mini"),
                    ("groq", "llama-3.3-70b-versatile"),
                    ("mystery", "model-x"),
                ]
            )
            c = _counts(rng, cache_write=True, audio=True)
            event.update({f"{k}_tokens": v for k, v in c.items()})
        elif shape == "openai":
            provider, model = "openai", rng.choice(["gpt-4o", "o3-mini"])
            c = _counts(rng, cache_write=False, audio=True)
            event["usage"] = {
                "prompt_tokens": c["input"], "completion_tokens": c["output"], "total_tokens": c["input"] + c["output"],
                "prompt_tokens_details": {"cached_tokens": c["cached_input"], "audio_tokens": c["audio_input"]},
                "completion_tokens_details": {"reasoning_tokens": c["reasoning"], "audio_tokens": c["audio_output"]},
            }  # fmt: skip
        elif shape == "anthropic":
            provider, model = (
                "anthropic",
                rng.choice(["claude-sonnet-4-20250514", "claude-3-5-haiku-latest"]),
            )
            c = _counts(rng, cache_write=True, audio=False)
            c["reasoning"] = 0  # Anthropic reports thinking inside output_tokens only
            event["usage"] = {
                "input_tokens": c["input"] - c["cached_input"] - c["cache_write"],
                "cache_read_input_tokens": c["cached_input"],
                "cache_creation_input_tokens": c["cache_write"],
                "output_tokens": c["output"],
            }
        else:
            provider, model = "google", "gemini-2.5-flash"
            c = _counts(rng, cache_write=False, audio=False)
            event["usageMetadata"] = {
                "promptTokenCount": c["input"], "candidatesTokenCount": c["output"] - c["reasoning"],
                "thoughtsTokenCount": c["reasoning"], "cachedContentTokenCount": c["cached_input"],
                "totalTokenCount": c["input"] + c["output"],
            }  # fmt: skip
        event["provider"], event["model"] = provider, model
        events.append(event)
        lvl = level if level is not None else ("error" if status == "error" else "info")
        expected.add(service, provider, model, operation, status, lvl, c)
    summary = {
        "event": "token_usage_summary", "query_id": "q-1", "whatsapp": "+15550001", "provider": "openai",
        "model": "gpt-4o-mini", "idempotency_key": f"summary-{seed}",
        "inferences": [
            {"node_name": "route", "inference_type": "classification", "prompt_tokens": 120, "completion_tokens": 3, "total_tokens": 123},
            {"node_name": "answer", "inference_type": "chat", "prompt_tokens": 900, "completion_tokens": 250, "total_tokens": 1150},
        ],
    }  # fmt: skip
    events.append(summary)
    zero = dict.fromkeys(TOKEN_TYPES, 0)
    expected.add(
        "default",
        "openai",
        "gpt-4o-mini",
        "classification",
        "ok",
        "info",
        {**zero, "input": 120, "output": 3},
    )
    expected.add(
        "default",
        "openai",
        "gpt-4o-mini",
        "chat",
        "ok",
        "info",
        {**zero, "input": 900, "output": 250},
    )
    return events, expected


def _post(url: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(
        f"{url}/api/usage", content=body, headers={"content-type": content_type}, timeout=30
    )


def _post_all(url: str, events: list[dict[str, Any]]) -> tuple[int, int]:
    """Post as one single event, a JSON array and NDJSON; return (accepted, duplicates)."""
    accepted = duplicates = 0
    r = _post(url, orjson.dumps(events[0]))
    parts = [r]
    parts.append(_post(url, orjson.dumps(events[1:500])))
    parts.append(
        _post(
            url, b"\n".join(orjson.dumps(e) for e in events[500:]) + b"\n", "application/x-ndjson"
        )
    )
    for r in parts:
        assert r.status_code == 200, r.text
        accepted += r.json()["accepted"]
        duplicates += r.json()["duplicates"]
    return accepted, duplicates


def _subset(samples: dict[SampleKey, float], names: tuple[str, ...]) -> dict[SampleKey, float]:
    return {k: v for k, v in samples.items() if k[0] in names}


COUNTED = ("ai_tokens_total", "ai_requests_total", "ai_requests_by_level_total")


def test_thousand_mixed_events_repost_and_kill_restart(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    events, expected = mixed_events(1000)
    with server_process(db) as server:
        assert _post_all(server.url, events) == (1000, 0)
        got = scrape(server.url)
        assert _subset(got, COUNTED) == expected.samples()

        view = httpx.get(f"{server.url}/api/metrics", timeout=10).json()
        totals = view["totals"]
        assert totals["requests"] == 1000
        assert totals["errors"] == sum(n for k, n in expected.requests.items() if k[4] == "error")
        for t in TOKEN_TYPES:
            want = sum(v for k, v in expected.tokens.items() if k[0] == t)
            assert totals["tokens"][f"{t}_tokens"] == want
        cost_total = sum(
            v
            for (name, labels), v in got.items()
            if name == "ai_cost_total" and ("type", "total") in labels
        )
        assert totals["cost_usd"]["total"] == pytest.approx(cost_total, rel=1e-12)
        assert view["by_level"] == {
            lvl: expected.levels[lvl] for lvl in ("debug", "info", "warn", "error")
        }
        assert {e["service"]: e["requests"] for e in view["by_service"]} == {
            s: sum(n for k, n in expected.requests.items() if k[0] == s)
            for s in {k[0] for k in expected.requests}
        }

        # The same events again, same keys: acknowledged as duplicates, nothing changes.
        assert _post_all(server.url, events) == (0, 1000)
        again = scrape(server.url)
        assert {k: v for k, v in again.items() if not k[0].startswith("ai_exporter_")} == {
            k: v for k, v in got.items() if not k[0].startswith("ai_exporter_")
        }
        assert again[("ai_exporter_events_duplicate_total", frozenset())] == 1000.0
        assert again[("ai_exporter_events_accepted_total", frozenset())] == 1000.0
        before_kill = _subset(scrape(server.url), (*COUNTED, "ai_cost_total", "ai_request_duration_seconds_sum",
                                                    "ai_request_duration_seconds_bucket", "ai_average_duration_ms",
                                                    "ai_time_to_first_token_seconds_sum", "ai_unpriced_requests_total"))  # fmt: skip
        server.kill()  # SIGKILL, right after the acknowledgements
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1000,)
    with server_process(db) as server:
        after = scrape(server.url)
        assert _subset(after, tuple({k[0] for k in before_kill})) == before_kill
        view2 = httpx.get(f"{server.url}/api/metrics", timeout=10).json()
        assert view2["totals"] == totals


def test_bad_requests_get_json_errors_and_record_nothing(tmp_path: Path) -> None:
    with server_process(tmp_path / "l.db") as server:
        before = scrape(server.url)
        r = _post(server.url, b'{"provider": "openai", "model": "m", "prompt_token": 5}')
        assert r.status_code == 422
        assert r.json() == {
            "error": {
                "message": "event 0: prompt_token: unknown field 'prompt_token'; did you mean 'prompt_tokens'?",
                "details": [
                    {
                        "index": 0,
                        "field": "prompt_token",
                        "message": "unknown field 'prompt_token'; did you mean 'prompt_tokens'?",
                    }
                ],
            }
        }
        # All or nothing: one bad event in a batch stores none of it.
        r = _post(
            server.url,
            orjson.dumps([{"provider": "p", "model": "m", "input_tokens": 5}, {"provider": "p"}]),
        )
        assert r.status_code == 422
        assert r.json()["error"]["details"] == [
            {"index": 1, "field": "model", "message": "is required"}
        ]
        assert _post(server.url, b"{nope").status_code == 400
        assert _post(server.url, b"a=b", "application/x-www-form-urlencoded").status_code == 415
        assert _post(server.url, b"x" * (16 * 1024 * 1024 + 1)).status_code == 413
        after = scrape(server.url)
        assert _subset(after, COUNTED) == _subset(before, COUNTED)
        rejected = {
            dict(k[1])["reason"]: v
            for k, v in after.items()
            if k[0] == "ai_exporter_events_rejected_total"
        }
        assert rejected == {
            "invalid": 3.0,
            "malformed": 1.0,
            "unsupported_media_type": 1.0,
            "too_large": 1.0,
        }
        assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}


def test_exposition_formats_and_promtool(tmp_path: Path) -> None:
    events, _ = mixed_events(40, seed=3)
    with server_process(tmp_path / "l.db") as server:
        assert _post(server.url, orjson.dumps(events)).status_code == 200
        plain = httpx.get(f"{server.url}/metrics")
        assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        api = httpx.get(f"{server.url}/api/metrics", params={"format": "prometheus"})
        assert exposition_samples(api.text) == exposition_samples(plain.text)
        om = httpx.get(
            f"{server.url}/metrics",
            headers={"accept": "application/openmetrics-text; version=1.0.0"},
        )
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.endswith("# EOF\n")
        zipped = httpx.get(f"{server.url}/metrics", headers={"accept-encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"  # httpx decodes it transparently
        assert exposition_samples(zipped.text) == exposition_samples(plain.text)
        with httpx.Client() as client:
            request = httpx.Request(
                "GET", f"{server.url}/metrics", headers={"accept-encoding": "gzip"}
            )
            raw = client.send(request, stream=True)
            body = b"".join(raw.iter_raw())
            raw.close()
        assert exposition_samples(gzip.decompress(body).decode()) == exposition_samples(plain.text)
        assert httpx.get(f"{server.url}/api/metrics", params={"format": "xml"}).status_code == 400
        twice = httpx.get(f"{server.url}/api/metrics?format=json&format=prometheus")
        assert twice.status_code == 400
        assert twice.json() == {"error": {"message": "give format once, got 'json', 'prometheus'"}}

    promtool = require_binary("promtool")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=plain.content, capture_output=True, timeout=30
    )
    report = (checked.stdout + checked.stderr).decode().strip().splitlines()
    assert report == ["ai_average_duration_ms metric names should not contain abbreviated units"]


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    with server_process(db) as server:
        assert (
            _post(
                server.url, orjson.dumps({"provider": "p", "model": "m", "input_tokens": 7})
            ).status_code
            == 200
        )
        assert server.terminate() == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT sum(input_tokens) FROM events").fetchone() == (7,)
