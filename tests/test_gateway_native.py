"""The gateway's native APIs end to end: the real `anthropic` and `google-genai` SDKs (and
the `openai` SDK for Azure) against the real sidecar over HTTP, fake upstreams behind it.

The fakes (tests/_fake_native.py) replay recorded bodies and streams; where each comes
from is in tests/fixtures/gateway/SOURCES.md: the Anthropic streams are
anthropic-sdk-python's own test fixtures (tests/lib/streaming/fixtures/), the Anthropic
and Gemini bodies were recorded from the live APIs by pydantic-ai and simonw/llm-gemini
(via tests/fixtures/corpus), the 5-minute plus 1-hour cache write usage is the example of
Anthropic's prompt-caching guide (docs.anthropic.com/en/docs/build-with-claude/prompt-caching),
the Gemini SSE stream is pydantic-ai's recording, and the Azure body was recorded from
Azure OpenAI by pydantic-ai's tests/providers/cassettes/test_azure.
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from _fake_native import (
    ANTHROPIC_CACHE_5M,
    ANTHROPIC_CACHE_5M_1H,
    ANTHROPIC_COUNT,
    ANTHROPIC_MODELS,
    ANTHROPIC_STREAM_BASIC,
    ANTHROPIC_STREAM_DELTA,
    ANTHROPIC_TOOL_USE,
    AZURE_CHAT,
    GEMINI_BODY,
    GEMINI_COUNT,
    GEMINI_STREAM_ARRAY,
    GEMINI_STREAM_SSE,
    FakeNative,
    fake_native,
    sse_events,
)
from google import genai
from google.genai import types as genai_types
from openai import OpenAI

from _server import SampleKey, scrape, serve_app
from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.gateway import parse_gateway
from ai_usage_exporter.config.settings import resolve
from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.gateway.calllog import CallLogger
from ai_usage_exporter.gateway.jsonarray import JSONArrayFramer
from ai_usage_exporter.gateway.proxy import Gateway
from ai_usage_exporter.recorder.recorder import Recorder
from ai_usage_exporter.server import create_app

CLAUDE_A_KEY = "sk-ant-api03-claudeATESTKEY0123456789"
CLAUDE_B_KEY = "sk-compat-claudeBTESTKEY9876543210"
GEMINI_KEY = "AIzaSyGEMINITESTKEY0123456789abcdefgh"
AZURE_KEY = "azureTESTKEY00112233445566778899aa"
CLIENT_TOKEN = "gw-native-client-token-7"
SECRETS = (CLAUDE_A_KEY, CLAUDE_B_KEY, GEMINI_KEY, AZURE_KEY, CLIENT_TOKEN)
MESSAGE: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "What are the population and area of London?"}],
}


@dataclass
class Sidecar:
    url: str
    recorder: Recorder
    log: io.StringIO
    db: Path
    a: FakeNative
    b: FakeNative
    gemini: FakeNative
    azure: FakeNative
    clients: list[Any] = field(default_factory=list)

    def claude(
        self, api_key: str = CLIENT_TOKEN, base: str = "", **kwargs: Any
    ) -> anthropic.Anthropic:
        client = anthropic.Anthropic(
            base_url=self.url + base, api_key=api_key, max_retries=0, timeout=10, **kwargs
        )
        self.clients.append(client)
        return client

    def genai(self) -> genai.Client:
        client = genai.Client(
            api_key=CLIENT_TOKEN,
            http_options=genai_types.HttpOptions(base_url=self.url, timeout=10_000),
        )
        # A Client closes its connection pool when collected; keep it for the test.
        self.clients.append(client)
        return client

    def rows(self, expect: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while True:
            self.recorder.flush(10)
            with sqlite3.connect(self.db) as conn:
                conn.row_factory = sqlite3.Row
                rows = [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]
            if len(rows) >= expect:
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(rows)} ledger rows after 10 s, expected {expect}")
            time.sleep(0.01)

    def samples(self) -> dict[SampleKey, float]:
        self.recorder.flush(10)
        return scrape(self.url)


def _config(a: str, b: str, g: str, z: str) -> dict[str, Any]:
    return {
        "upstreams": {
            "claude-a": {
                "provider": "anthropic",
                "api": "anthropic",
                "base_url": a,
                "api_key_env": "CLAUDE_A_KEY",
                "timeout_s": 1.5,
            },  # fmt: skip
            # An Anthropic-compatible provider that wants its key as a bearer token.
            "claude-b": {
                "provider": "anthropic",
                "api": "anthropic",
                "base_url": b,
                "api_key_env": "CLAUDE_B_KEY",
                "auth": "bearer",
            },  # fmt: skip
            "gemini": {
                "provider": "google",
                "api": "gemini",
                "base_url": g,
                "api_key_env": "GEMINI_KEY",
            },  # fmt: skip
            "azure": {
                "provider": "azure",
                "auth": "api-key",
                "api_version": "2024-10-21",
                "base_url": z + "/openai/deployments/gpt-4o",
                "api_key_env": "AZURE_KEY",
            },  # fmt: skip
        },
        "routes": {
            "claude": {"upstreams": ["claude-a", "claude-b"]},
            "gemini": {"upstreams": ["gemini"]},
            "azure": {"upstreams": ["azure"]},
        },
        "client_tokens": [CLIENT_TOKEN],
        "timeout_s": 5,
    }


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    with (
        fake_native("claude-a") as a,
        fake_native("claude-b", anthropic_body=ANTHROPIC_CACHE_5M) as b,
        fake_native("gemini") as g,
        fake_native("azure", azure_key=AZURE_KEY) as z,
    ):
        config = parse_gateway(_config(a.url, b.url, g.url, z.url), "test")
        # No default_routes given: each native API has one route, which is its default.
        assert config.default_routes == {"anthropic": "claude", "gemini": "gemini"}
        assert config.default_route == "azure"
        db = tmp_path / "gw.db"
        recorder = Recorder(str(db))
        log = io.StringIO()
        keys = {"claude-a": CLAUDE_A_KEY, "claude-b": CLAUDE_B_KEY, "gemini": GEMINI_KEY,
                "azure": AZURE_KEY}  # fmt: skip
        logger = CallLogger(log, level="debug", detailed=True, secrets=keys.values())
        gateway = Gateway(config, recorder, keys=keys, logger=logger)
        app = create_app(
            recorder, gateway=gateway, gateway_tokens=config.client_tokens, close_recorder=True
        )
        with serve_app(app) as url:
            sidecar = Sidecar(url, recorder, log, db, a, b, g, z)
            try:
                yield sidecar
            finally:
                for client in sidecar.clients:
                    client.close()


def _labels(service: str, provider: str, model: str) -> dict[str, str]:
    return {"service": service, "provider": provider, "model": model}


def _tokens(s: dict[SampleKey, float], kind: str, service: str, provider: str, model: str) -> float:
    labels = {"type": kind, **_labels(service, provider, model)}
    return s.get(("ai_tokens_total", frozenset(labels.items())), 0.0)


def _cost(s: dict[SampleKey, float], service: str, provider: str, model: str) -> float:
    labels = {"type": "total", **_labels(service, provider, model)}
    return s.get(("ai_cost_total", frozenset(labels.items())), 0.0)


def _requests(
    s: dict[SampleKey, float], service: str, provider: str, model: str, status: str
) -> float:
    labels = {**_labels(service, provider, model), "operation": "chat", "status": status}
    return s.get(("ai_requests_total", frozenset(labels.items())), 0.0)


def _price(provider: str, model: str, **counts: Any) -> float:
    return PriceBook().price(UsageEvent(provider, model, **counts)).total


COUNT_COLUMNS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                 "cache_write_1h_tokens", "reasoning_tokens")  # fmt: skip


def _counts(row: dict[str, Any]) -> dict[str, int]:
    return {c: row[c] for c in COUNT_COLUMNS}


# ---------------------------------------------------------------- Anthropic


def test_messages_create_plain_comes_back_unchanged_and_is_counted(sidecar: Sidecar) -> None:
    client = sidecar.claude(default_headers={"anthropic-version": "2023-06-01",
                                             "anthropic-beta": "token-efficient-tools-2025-02-19"})  # fmt: skip
    raw = client.messages.with_raw_response.create(**MESSAGE)
    assert raw.http_response.content == ANTHROPIC_TOOL_USE
    assert raw.headers["request-id"] == "req_fake_plain"
    message = raw.parse()
    assert [b.type for b in message.content] == ["tool_use", "tool_use"]
    (seen,) = sidecar.a.requests
    assert seen["path"] == "/v1/messages" and seen["body"] == MESSAGE
    headers = seen["headers"]
    assert headers["x-api-key"] == CLAUDE_A_KEY and "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "token-efficient-tools-2025-02-19"

    (row,) = sidecar.rows(1)
    assert (row["provider"], row["model"], row["service"], row["operation"], row["status"]) == (
        "anthropic", "claude-sonnet-4-5-20250929", "claude", "chat", "ok",
    )  # fmt: skip
    assert _counts(row) == {"input_tokens": 781, "output_tokens": 74, "cached_input_tokens": 0,
                            "cache_write_tokens": 0, "cache_write_1h_tokens": 0,
                            "reasoning_tokens": 0}  # fmt: skip
    s = sidecar.samples()
    model = "claude-sonnet-4-5-20250929"
    assert _requests(s, "claude", "anthropic", model, "ok") == 1
    assert _tokens(s, "input", "claude", "anthropic", model) == 781
    assert _tokens(s, "output", "claude", "anthropic", model) == 74
    want = _price("anthropic", model, input_tokens=781, output_tokens=74)
    assert want > 0 and _cost(s, "claude", "anthropic", model) == pytest.approx(want, rel=1e-9)


def test_client_token_as_x_api_key_or_bearer_and_refusals_in_anthropics_shape(
    sidecar: Sidecar,
) -> None:
    url = sidecar.url + "/v1/messages"
    for headers in ({"x-api-key": CLIENT_TOKEN}, {"authorization": f"Bearer {CLIENT_TOKEN}"}):
        r = httpx.post(url, json=MESSAGE, headers={**headers, "anthropic-version": "2023-06-01"})
        assert r.status_code == 200 and r.content == ANTHROPIC_TOOL_USE
    for headers in ({}, {"x-api-key": "not-the-token"}):
        r = httpx.post(url, json=MESSAGE, headers=headers)
        assert r.status_code == 401
        body = r.json()
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        sidecar.claude(api_key="wrong").messages.create(**MESSAGE)
    assert len(sidecar.a.requests) == 2


def test_messages_create_streamed_is_relayed_as_sent_and_folds_cumulative_usage(
    sidecar: Sidecar,
) -> None:
    client = sidecar.claude()
    with client.messages.with_streaming_response.create(**MESSAGE, stream=True) as response:
        got = b"".join(response.iter_bytes())
    assert got == b"".join(sse_events(ANTHROPIC_STREAM_DELTA))
    (row,) = sidecar.rows(1)
    # message_start's counts, overridden by message_delta's cumulative ones (input 40,
    # cache read 7, cache write 12, output 8 with 3 thinking, one web search).
    assert (row["model"], row["status"], row["web_search_requests"]) == (
        "claude-sonnet-4-5",
        "ok",
        1,
    )
    assert _counts(row) == {"input_tokens": 59, "output_tokens": 8, "cached_input_tokens": 7,
                            "cache_write_tokens": 12, "cache_write_1h_tokens": 0,
                            "reasoning_tokens": 3}  # fmt: skip
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["duration_ms"]
    s = sidecar.samples()
    want = _price("anthropic", "claude-sonnet-4-5", input_tokens=59, output_tokens=8,
                  cached_input_tokens=7, cache_write_tokens=12, reasoning_tokens=3,
                  web_search_requests=1)  # fmt: skip
    assert _cost(s, "claude", "anthropic", "claude-sonnet-4-5") == pytest.approx(want, rel=1e-9)


def test_messages_stream_helper(sidecar: Sidecar) -> None:
    sidecar.a.anthropic_stream = ANTHROPIC_STREAM_BASIC
    with sidecar.claude().messages.stream(**MESSAGE) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello there!"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 6)
    (row,) = sidecar.rows(1)
    assert (row["model"], row["input_tokens"], row["output_tokens"]) == (
        "claude-3-opus-latest",
        11,
        6,
    )
    s = sidecar.samples()
    assert _cost(s, "claude", "anthropic", "claude-3-opus-latest") == pytest.approx(
        _price("anthropic", "claude-3-opus-latest", input_tokens=11, output_tokens=6), rel=1e-9
    )


def test_count_tokens_is_relayed_and_not_recorded(sidecar: Sidecar) -> None:
    client = sidecar.claude()
    raw = client.messages.with_raw_response.count_tokens(
        model="claude-sonnet-4-5", messages=MESSAGE["messages"]
    )
    assert raw.http_response.content == ANTHROPIC_COUNT
    assert raw.parse().input_tokens == 2095
    assert sidecar.a.requests[-1]["path"] == "/v1/messages/count_tokens"
    # A billed call after it is the ledger's only row.
    client.messages.create(**MESSAGE)
    rows = sidecar.rows(1)
    time.sleep(0.2)
    assert len(sidecar.rows(1)) == 1 and rows[0]["input_tokens"] == 781


def test_prompt_caching_5m_and_1h_writes_are_counted_and_priced(sidecar: Sidecar) -> None:
    client = sidecar.claude()
    sidecar.a.anthropic_body = ANTHROPIC_CACHE_5M
    client.messages.create(**MESSAGE)
    sidecar.a.anthropic_body = ANTHROPIC_CACHE_5M_1H
    raw = client.messages.with_raw_response.create(**MESSAGE)
    assert raw.http_response.content == ANTHROPIC_CACHE_5M_1H
    first, second = sidecar.rows(2)
    assert _counts(first) == {"input_tokens": 7 + 1069, "output_tokens": 60, "cached_input_tokens": 0,
                              "cache_write_tokens": 1069, "cache_write_1h_tokens": 0,
                              "reasoning_tokens": 0}  # fmt: skip
    assert _counts(second) == {"input_tokens": 2048 + 1800 + 248, "output_tokens": 503,
                               "cached_input_tokens": 1800, "cache_write_tokens": 248,
                               "cache_write_1h_tokens": 100, "reasoning_tokens": 0}  # fmt: skip
    model = "claude-sonnet-4-5-20250929"
    want = _price("anthropic", model, input_tokens=1076, output_tokens=60,
                  cache_write_tokens=1069) + _price(
        "anthropic", model, input_tokens=4096, output_tokens=503, cached_input_tokens=1800,
        cache_write_tokens=248, cache_write_1h_tokens=100)  # fmt: skip
    # The 1-hour writes cost more than the same tokens written for 5 minutes.
    assert _price("anthropic", model, input_tokens=4096, output_tokens=503,
                  cached_input_tokens=1800, cache_write_tokens=248) < want - _price(
        "anthropic", model, input_tokens=1076, output_tokens=60, cache_write_tokens=1069)  # fmt: skip
    s = sidecar.samples()
    assert _tokens(s, "cache_write_1h", "claude", "anthropic", model) == 100
    assert _tokens(s, "cache_write", "claude", "anthropic", model) == 1069 + 248
    assert _cost(s, "claude", "anthropic", model) == pytest.approx(want, rel=1e-9)


def test_a_tool_use_turn(sidecar: Sidecar) -> None:
    client = sidecar.claude()
    tools = [{"name": "get_population", "description": "Population of a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]  # fmt: skip
    first = client.messages.create(**MESSAGE, tools=tools)  # type: ignore[arg-type]
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert use.type == "tool_use"
    sidecar.a.anthropic_body = ANTHROPIC_CACHE_5M  # any answer to the tool result
    messages = [
        *MESSAGE["messages"],
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "8.8M"}],
        },
    ]
    client.messages.create(model=MESSAGE["model"], max_tokens=1024, messages=messages, tools=tools)  # type: ignore[arg-type]
    turn = sidecar.a.requests[-1]["body"]
    assert turn["messages"][2]["content"][0] == {
        "type": "tool_result", "tool_use_id": "toolu_01KWZYbjFVqYdpqBiJbw8zJB", "content": "8.8M",
    }  # fmt: skip
    rows = sidecar.rows(2)
    assert [(r["input_tokens"], r["output_tokens"]) for r in rows] == [(781, 74), (1076, 60)]


def test_models_list_anthropic_style_for_an_anthropic_client(sidecar: Sidecar) -> None:
    page = sidecar.claude().models.list()
    assert [m.id for m in page.data] == ["claude-sonnet-4-5-20250929"]
    r = httpx.get(sidecar.url + "/v1/models?limit=5", headers={"x-api-key": CLIENT_TOKEN,
                                                               "anthropic-version": "2023-06-01"})  # fmt: skip
    assert r.content == ANTHROPIC_MODELS
    assert sidecar.a.requests[-1]["query"] == "limit=5"


@pytest.mark.parametrize("mode, reason", [("429", "rate_limit"), ("529", "server"),
                                          ("500", "server"), ("stall", "timeout")])  # fmt: skip
def test_fallback_between_anthropic_upstreams_before_the_first_byte(
    sidecar: Sidecar, mode: str, reason: str
) -> None:
    sidecar.a.mode = mode
    raw = sidecar.claude().messages.with_raw_response.create(**MESSAGE)
    sidecar.a.release()
    assert raw.http_response.content == ANTHROPIC_CACHE_5M  # claude-b's answer
    seen = sidecar.b.requests[-1]["headers"]
    assert seen["authorization"] == f"Bearer {CLAUDE_B_KEY}" and "x-api-key" not in seen
    failed, served = sidecar.rows(2)
    assert (failed["status"], failed["error_type"], failed["provider"]) == (
        "error",
        reason,
        "anthropic",
    )
    assert (served["status"], served["input_tokens"]) == ("ok", 1076)
    labels = {"route": "claude", "from": "claude-a", "to": "claude-b", "reason": reason}
    assert sidecar.samples()[("ai_gateway_fallbacks_total", frozenset(labels.items()))] == 1


def test_streamed_fallback_never_after_the_first_byte(sidecar: Sidecar) -> None:
    sidecar.a.mode = "drop"
    with sidecar.claude().messages.with_streaming_response.create(
        **MESSAGE, stream=True
    ) as response:
        got = b"".join(response.iter_bytes())
    # The client gets what came before the upstream broke off, and no second answer.
    assert got == b"".join(sse_events(ANTHROPIC_STREAM_DELTA)[:2])
    assert sidecar.b.requests == []
    (row,) = sidecar.rows(1)
    # Recorded once, with message_start's usage.
    assert (row["status"], row["error_type"], row["input_tokens"], row["output_tokens"]) == (
        "error", "connection", 25 + 5 + 10, 1,
    )  # fmt: skip


def test_an_abandoned_stream_is_recorded_once_with_what_was_seen(sidecar: Sidecar) -> None:
    sidecar.a.mode = "hold"
    with httpx.stream("POST", sidecar.url + "/v1/messages", json={**MESSAGE, "stream": True},
                      headers={"x-api-key": CLIENT_TOKEN}, timeout=10) as r:  # fmt: skip
        first = next(r.iter_raw())
        assert first.startswith(b"event: message_start")
    assert sidecar.a.stream_closed.wait(5)
    (row,) = sidecar.rows(1)
    assert (row["status"], row["error_type"], row["input_tokens"], row["output_tokens"]) == (
        "error", "cancelled", 25 + 5 + 10, 1,
    )  # fmt: skip
    time.sleep(0.2)
    assert len(sidecar.rows(1)) == 1


def test_both_anthropic_upstreams_down_is_a_502_in_anthropics_shape(sidecar: Sidecar) -> None:
    sidecar.a.mode, sidecar.b.mode = "529", "503"
    with pytest.raises(anthropic.APIStatusError) as info:
        sidecar.claude().messages.create(**MESSAGE)
    assert info.value.status_code == 502
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    message = body["error"]["message"]
    assert "claude-a: HTTP 529 (server)" in message and "claude-b: HTTP 503 (server)" in message
    assert [a["upstream"] for a in body["error"]["attempts"]] == ["claude-a", "claude-b"]
    assert [r["status"] for r in sidecar.rows(2)] == ["error", "error"]


# ---------------------------------------------------------------- Gemini


def test_generate_content_plain(sidecar: Sidecar) -> None:
    client = sidecar.genai()
    response = client.models.generate_content(model="gemini-2.5-flash", contents="Describe it")
    assert response.text is not None and response.text.startswith("I received a response")
    (seen,) = sidecar.gemini.requests
    # google-genai's default API version, v1.
    assert seen["path"] == "/v1/models/gemini-2.5-flash:generateContent"
    assert seen["headers"]["x-goog-api-key"] == GEMINI_KEY
    r = httpx.post(sidecar.url + "/v1beta/models/gemini-2.5-flash:generateContent",
                   json={"contents": [{"parts": [{"text": "hi"}]}]},
                   headers={"x-goog-api-key": CLIENT_TOKEN})  # fmt: skip
    assert r.content == GEMINI_BODY
    first, _ = sidecar.rows(2)
    assert (first["provider"], first["model"], first["service"], first["operation"]) == (
        "google", "gemini-2.5-flash", "gemini", "chat",
    )  # fmt: skip
    # promptTokenCount 373 (204 cached: 63 text, 141 image), 89 candidates + 167 thoughts.
    assert (first["input_tokens"], first["output_tokens"], first["cached_input_tokens"],
            first["reasoning_tokens"], first["image_input_tokens"],
            first["cached_image_input_tokens"]) == (373, 256, 204, 167, 258, 141)  # fmt: skip
    s = sidecar.samples()
    want = 2 * _price("google", "gemini-2.5-flash", input_tokens=373, output_tokens=256,
                      cached_input_tokens=204, reasoning_tokens=167, image_input_tokens=258,
                      cached_image_input_tokens=141)  # fmt: skip
    assert _cost(s, "gemini", "google", "gemini-2.5-flash") == pytest.approx(want, rel=1e-9)


def test_generate_content_stream_sse(sidecar: Sidecar) -> None:
    chunks = list(sidecar.genai().models.generate_content_stream(model="gemini-2.5-flash",
                                                                  contents="Count to 30"))  # fmt: skip
    assert "".join(c.text or "" for c in chunks).startswith("1\n2\n3")
    seen = sidecar.gemini.requests[-1]
    assert seen["path"].endswith(":streamGenerateContent") and seen["query"] == "alt=sse"
    with httpx.stream("POST", sidecar.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                      json={"contents": []}, headers={"x-goog-api-key": CLIENT_TOKEN}) as r:  # fmt: skip
        assert r.read() == b"".join(sse_events(GEMINI_STREAM_SSE))
    row, _ = sidecar.rows(2)
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (18, 80 + 35, 35)
    s = sidecar.samples()
    want = 2 * _price("google", "gemini-2.5-flash", input_tokens=18, output_tokens=115,
                      reasoning_tokens=35)  # fmt: skip
    assert _cost(s, "gemini", "google", "gemini-2.5-flash") == pytest.approx(want, rel=1e-9)


def test_stream_generate_content_as_a_json_array_and_the_key_query(sidecar: Sidecar) -> None:
    url = sidecar.url + f"/v1beta/models/gemini-3.6-flash:streamGenerateContent?key={CLIENT_TOKEN}"
    with httpx.stream("POST", url, json={"contents": []}) as r:
        assert r.status_code == 200
        assert r.read() == GEMINI_STREAM_ARRAY
    seen = sidecar.gemini.requests[-1]
    assert seen["query"] == "" and seen["headers"]["x-goog-api-key"] == GEMINI_KEY
    (row,) = sidecar.rows(1)
    assert (row["model"], row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (
        "gemini-3.6-flash", 11, 2 + 291, 291,
    )  # fmt: skip
    bad = httpx.post(url.replace(CLIENT_TOKEN, "nope"), json={})
    assert bad.status_code == 401
    assert bad.json()["error"]["status"] == "UNAUTHENTICATED" and bad.json()["error"]["code"] == 401


def test_count_tokens_gemini_is_relayed_and_not_recorded(sidecar: Sidecar) -> None:
    got = sidecar.genai().models.count_tokens(model="gemini-2.5-flash", contents="hello")
    assert got.total_tokens == 31
    r = httpx.post(sidecar.url + "/v1beta/models/gemini-2.5-flash:countTokens", json={},
                   headers={"x-goog-api-key": CLIENT_TOKEN})  # fmt: skip
    assert r.content == GEMINI_COUNT
    sidecar.genai().models.generate_content(model="gemini-2.5-flash", contents="hi")
    time.sleep(0.2)
    assert len(sidecar.rows(1)) == 1


def test_gemini_errors_come_back_in_googles_shape(sidecar: Sidecar) -> None:
    sidecar.gemini.mode = "503"
    with pytest.raises(genai.errors.APIError) as info:
        sidecar.genai().models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert info.value.code == 502 and info.value.status == "UNAVAILABLE"
    r = httpx.post(sidecar.url + "/v1beta/models/gemini-2.5-flash:embedContent", json={},
                   headers={"x-goog-api-key": CLIENT_TOKEN})  # fmt: skip
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"


# ---------------------------------------------------------------- Azure OpenAI


def test_azure_openai_as_an_openai_api_upstream(sidecar: Sidecar) -> None:
    client = OpenAI(base_url=sidecar.url + "/v1", api_key=CLIENT_TOKEN, max_retries=0)
    sidecar.clients.append(client)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.http_response.content == AZURE_CHAT
    seen = sidecar.azure.requests[-1]
    assert seen["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert seen["query"] == "api-version=2024-10-21"
    assert seen["headers"]["api-key"] == AZURE_KEY and "authorization" not in seen["headers"]
    (row,) = sidecar.rows(1)
    usage = orjson.loads(AZURE_CHAT)["usage"]
    assert (row["provider"], row["model"], row["input_tokens"], row["output_tokens"]) == (
        "azure", "gpt-4o-2024-11-20", usage["prompt_tokens"], usage["completion_tokens"],
    )  # fmt: skip


# ---------------------------------------------------------------- keys


def test_keys_never_leak(sidecar: Sidecar) -> None:
    client = sidecar.claude()
    client.messages.create(**MESSAGE)
    with client.messages.stream(**MESSAGE) as stream:
        stream.get_final_message()
    sidecar.genai().models.generate_content(model="gemini-2.5-flash", contents="hi")
    httpx.post(sidecar.url + f"/v1beta/models/gemini-2.5-flash:generateContent?key={CLIENT_TOKEN}&x=1",
               json={})  # fmt: skip
    sidecar.a.mode = sidecar.b.mode = "500"
    failed = httpx.post(
        sidecar.url + "/v1/messages", json=MESSAGE, headers={"x-api-key": CLIENT_TOKEN}
    )
    denied = httpx.post(
        sidecar.url + "/v1/messages", json=MESSAGE, headers={"x-api-key": CLAUDE_A_KEY}
    )
    rows = sidecar.rows(6)
    stored = orjson.dumps(rows).decode()
    logged = sidecar.log.getvalue()
    for secret in SECRETS:
        assert secret not in stored and secret not in logged
        assert secret not in failed.text and secret not in denied.text
    # Each upstream got its own key and nothing else of anyone's.
    for fake, own in (
        (sidecar.a, CLAUDE_A_KEY),
        (sidecar.b, CLAUDE_B_KEY),
        (sidecar.gemini, GEMINI_KEY),
    ):
        for request in fake.requests:
            sent = orjson.dumps([request["headers"], request["query"]]).decode()
            assert own in sent
            assert [s for s in SECRETS if s != own and s in sent] == []


# ---------------------------------------------------------------- config and framing


def test_a_route_that_mixes_apis_is_refused_naming_route_and_upstreams() -> None:
    section = {
        "upstreams": {
            "claude": {
                "provider": "anthropic",
                "api": "anthropic",
                "base_url": "https://api.anthropic.com",
            },
            "oai": {"provider": "openai", "base_url": "https://api.openai.com/v1"},
        },
        "routes": {"mixed": {"upstreams": ["claude", "oai"]}},
    }
    with pytest.raises(ConfigError) as info:
        parse_gateway(section, "c.yaml")
    assert str(info.value) == (
        "c.yaml: route 'mixed' mixes APIs: claude (anthropic), oai (openai); a route's "
        "upstreams must all speak one API"
    )
    two = {**section, "routes": {"c1": {"upstreams": ["claude"]}, "c2": {"upstreams": ["claude"]},
                                 "o": {"upstreams": ["oai"]}}}  # fmt: skip
    config = parse_gateway(two, "c.yaml")
    # Two Anthropic routes: no default until one is named.
    assert (config.default_route, config.default_routes) == ("o", {})
    config = parse_gateway({**two, "default_routes": {"anthropic": "c2"}}, "c.yaml")
    assert config.default_for("anthropic") == "c2"
    for bad, message in (
        ({"default_routes": {"anthropic": "o"}},
         "c.yaml: default_routes.anthropic 'o' is not a route of the anthropic API; anthropic routes: c1, c2"),
        ({"default_route": "c1"},
         "c.yaml: default_route 'c1' speaks the anthropic API; default_route is the OpenAI "
         "routes' default, use default_routes: {anthropic: c1}"),
    ):  # fmt: skip
        with pytest.raises(ConfigError) as info:
            parse_gateway({**two, **bad}, "c.yaml")
        assert str(info.value) == message
    with pytest.raises(
        ConfigError, match="api must be one of openai, anthropic, gemini, got 'cohere'"
    ):
        parse_gateway(
            {"upstreams": {"x": {"provider": "x", "api": "cohere", "base_url": "https://x"}}},
            "c.yaml",
        )


def test_json_array_framer_cuts_elements_at_any_chunking() -> None:
    want = orjson.loads(GEMINI_STREAM_ARRAY)
    for size in (1, 2, 3, 7, 64, len(GEMINI_STREAM_ARRAY)):
        framer = JSONArrayFramer()
        got: list[bytes] = []
        for i in range(0, len(GEMINI_STREAM_ARRAY), size):
            got.extend(framer.feed(GEMINI_STREAM_ARRAY[i : i + size]))
        assert [orjson.loads(g) for g in got] == want
        assert framer.tail().strip() in (b"", b"]")


def test_native_paths_under_a_named_route(sidecar: Sidecar) -> None:
    named = sidecar.claude(base="/api/ai/claude")
    assert named.messages.with_raw_response.create(**MESSAGE).http_response.content == (
        ANTHROPIC_TOOL_USE
    )
    client = genai.Client(
        api_key=CLIENT_TOKEN,
        http_options=genai_types.HttpOptions(base_url=sidecar.url + "/api/ai/gemini"),
    )
    sidecar.clients.append(client)
    assert client.models.generate_content(model="gemini-2.5-flash", contents="hi").text
    # A route of another API answers in the client's API's shape, naming it.
    r = httpx.post(sidecar.url + "/api/ai/azure/v1/messages", json=MESSAGE,
                   headers={"x-api-key": CLIENT_TOKEN})  # fmt: skip
    assert r.status_code == 404
    assert r.json() == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "gateway route 'azure' speaks the openai API, not anthropic; "
            "its upstreams: azure",
            "code": "wrong_api",
        },
    }
    rows = sidecar.rows(2)
    assert [(r["service"], r["provider"]) for r in rows] == [
        ("claude", "anthropic"),
        ("gemini", "google"),
    ]


def test_the_config_file_check_names_the_line_of_a_mixed_route(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "gateway:\n"
        "  upstreams:\n"
        "    claude: {provider: anthropic, api: anthropic, base_url: 'https://api.anthropic.com'}\n"
        "    gem: {provider: google, api: gemini, base_url: 'https://generativelanguage.googleapis.com'}\n"
        "  routes:\n"
        "    agents: {upstreams: [claude, gem]}\n"
    )
    with pytest.raises(ConfigError) as info:
        resolve({"config": str(path)}, environ={})
    assert str(info.value) == (
        f"{path}:6: route 'agents' mixes APIs: claude (anthropic), gem (gemini); a route's "
        "upstreams must all speak one API"
    )


def test_an_error_event_inside_an_anthropic_stream_is_recorded_as_the_calls_error(
    sidecar: Sidecar,
) -> None:
    # Anthropic's streaming guide: under load an `overloaded_error` event may come after
    # the 200 (docs.anthropic.com/en/docs/build-with-claude/streaming#error-events).
    error = (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded"}}\n\n'
    )
    stream = b"".join(sse_events(ANTHROPIC_STREAM_BASIC)[:2]) + error
    sidecar.a.anthropic_stream = stream
    with sidecar.claude().messages.with_streaming_response.create(**MESSAGE, stream=True) as r:
        assert b"".join(r.iter_bytes()) == stream
    (row,) = sidecar.rows(1)
    assert (row["status"], row["error_type"], row["input_tokens"]) == ("error", "server", 11)
    assert sidecar.b.requests == []


def test_each_apis_error_response_is_a_pure_function_of_status_type_message_headers() -> None:
    from ai_usage_exporter.gateway.apis import APIS, api_for_request

    bodies = {}
    for name, api in APIS.items():
        r = api.error_response(429, None, "over budget", {"retry-after": "30"}, code="budget")
        assert (r.status_code, r.headers["retry-after"]) == (429, "30")
        bodies[name] = orjson.loads(r.body)
    assert bodies == {
        "openai": {"error": {"message": "over budget", "type": "gateway_error", "code": "budget"}},
        "anthropic": {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": "over budget", "code": "budget"},
        },
        "gemini": {
            "error": {
                "code": 429,
                "message": "over budget",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "budget",
                        "domain": "ai-usage-exporter",
                    }
                ],
            }
        },
    }
    anthropic_529 = orjson.loads(APIS["anthropic"].error_response(529, None, "busy").body)
    assert anthropic_529["error"]["type"] == "overloaded_error"
    # Which API a request speaks, from its path (and Anthropic's header on GET /v1/models).
    cases = {
        ("/v1/chat/completions", False): "openai",
        ("/api/ai/r/chat/completions", False): "openai",
        ("/v1/messages", False): "anthropic",
        ("/api/ai/r/v1/messages/count_tokens", False): "anthropic",
        ("/v1beta/models/gemini-2.5-flash:generateContent", False): "gemini",
        ("/v1/models/gemini-2.5-flash:streamGenerateContent", False): "gemini",
        ("/api/ai/r/v1beta/models/m:countTokens", False): "gemini",
        ("/v1/models", False): "openai",
        ("/v1/models", True): "anthropic",
    }
    for (path, versioned), want in cases.items():
        headers = [(b"anthropic-version", b"2023-06-01")] if versioned else []
        assert api_for_request(path, headers).NAME == want, path
