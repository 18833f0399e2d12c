"""The gateway end to end: the real OpenAI SDK as client, the real sidecar, fake upstreams over HTTP."""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from _fake_upstream import (
    CHAT_STREAM,
    DEEPSEEK_CHAT,
    OPENAI_CHAT,
    RESPONSES_STREAM,
    FakeUpstream,
    fake_upstream,
    sse_events,
    without_usage,
)
from _server import SampleKey, ServerProcess, free_port, scrape, serve_app
from ai_usage_exporter.cli.main import main
from ai_usage_exporter.config.gateway import parse_gateway
from ai_usage_exporter.core.events.model import Limits, UsageEvent
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.gateway.calllog import CallLogger
from ai_usage_exporter.gateway.proxy import Gateway
from ai_usage_exporter.recorder.recorder import Recorder
from ai_usage_exporter.server import create_app

OPENAI_KEY = "sk-proj-openaiTESTKEY0123456789abcdef"
DEEPSEEK_KEY = "sk-deepseekTESTKEY9876543210fedcba"
CLIENT_TOKEN = "gw-client-token-1"
WRITE_TOKEN = "write-token-1"
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hi"}],
}


@dataclass
class Sidecar:
    url: str
    recorder: Recorder
    gateway: Gateway
    log: io.StringIO
    db: Path
    openai: FakeUpstream
    deepseek: FakeUpstream
    clients: list[OpenAI] = field(default_factory=list)

    def sdk(self, base: str = "/v1", api_key: str = CLIENT_TOKEN) -> OpenAI:
        """An OpenAI SDK client pointed at the sidecar; closed when the test ends."""
        client = OpenAI(base_url=self.url + base, api_key=api_key, max_retries=0, timeout=10)
        self.clients.append(client)
        return client

    def samples(self) -> dict[SampleKey, float]:
        self.recorder.flush(10)
        return scrape(self.url)

    def rows(self, expect: int = 0) -> list[dict[str, Any]]:
        """The ledger's rows once `expect` of them are there (records are queued after the
        client has its answer, so they may land a moment later)."""
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


def _config(openai_url: str, deepseek_url: str, timeout_s: float = 2.0) -> dict[str, Any]:
    return {
        "upstreams": {
            "openai": {
                "provider": "openai",
                "base_url": openai_url + "/v1",
                "api_key_env": "OPENAI_API_KEY",
                "timeout_s": timeout_s,
            },
            "deepseek": {
                "provider": "deepseek",
                "base_url": deepseek_url + "/v1",
                "api_key_env": "DEEPSEEK_API_KEY",
                "models": {"gpt-4o-mini": "deepseek-chat"},
            },
        },
        "routes": {
            "openai": {"upstreams": ["openai", "deepseek"]},
            "deepseek": {"upstreams": ["deepseek"]},
        },
        "default_route": "openai",
        "client_tokens": [CLIENT_TOKEN],
        "timeout_s": 5,
    }


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    with (
        fake_upstream("openai") as up_openai,
        fake_upstream("deepseek", chat_body=DEEPSEEK_CHAT) as up_deepseek,
    ):
        config = parse_gateway(_config(up_openai.url, up_deepseek.url), "test")
        db = tmp_path / "gw.db"
        recorder = Recorder(str(db))
        log = io.StringIO()
        keys = {"openai": OPENAI_KEY, "deepseek": DEEPSEEK_KEY}
        logger = CallLogger(log, level="debug", detailed=True, secrets=keys.values())
        gateway = Gateway(config, recorder, keys=keys, logger=logger)
        app = create_app(
            recorder,
            write_tokens=[WRITE_TOKEN],
            gateway=gateway,
            gateway_tokens=config.client_tokens,
            close_recorder=True,
        )
        with serve_app(app) as url:
            sidecar = Sidecar(url, recorder, gateway, log, db, up_openai, up_deepseek)
            try:
                yield sidecar
            finally:
                for client in sidecar.clients:
                    client.close()


def _wait_events(recorder: Recorder, db: Path, n: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        recorder.flush(10)
        with sqlite3.connect(db) as conn:
            if conn.execute("SELECT count(*) FROM events").fetchone()[0] >= n:
                return
        time.sleep(0.01)
    raise AssertionError(f"fewer than {n} events recorded within 10 s")


def _requests(s: dict[SampleKey, float], provider: str, status: str, model: str) -> float:
    labels = {
        "service": "openai",
        "provider": provider,
        "model": model,
        "operation": "chat",
        "status": status,
    }
    return s.get(("ai_requests_total", frozenset(labels.items())), 0.0)


def _tokens(s: dict[SampleKey, float], kind: str, provider: str, model: str) -> float:
    labels = {"type": kind, "service": "openai", "provider": provider, "model": model}
    return s.get(("ai_tokens_total", frozenset(labels.items())), 0.0)


def _cost(s: dict[SampleKey, float], provider: str, model: str) -> float:
    labels = {"type": "total", "service": "openai", "provider": provider, "model": model}
    return s.get(("ai_cost_total", frozenset(labels.items())), 0.0)


def _fallbacks(s: dict[SampleKey, float], reason: str) -> float:
    labels = {"route": "openai", "from": "openai", "to": "deepseek", "reason": reason}
    return s.get(("ai_gateway_fallbacks_total", frozenset(labels.items())), 0.0)


def _price(provider: str, model: str, inp: int, out: int) -> float:
    return PriceBook().price(UsageEvent(provider, model, input_tokens=inp, output_tokens=out)).total


# ---------------------------------------------------------------- served calls


def test_plain_chat_comes_back_byte_identical_and_is_counted(sidecar: Sidecar) -> None:
    raw = sidecar.sdk().chat.completions.with_raw_response.create(
        **CHAT_BODY, extra_headers={"X-Request-Id": "req-plain"}
    )
    assert raw.http_response.content == OPENAI_CHAT
    assert raw.headers["x-request-id"] == "req-plain"
    assert raw.parse().choices[0].message.content == "Hi, how are you?"
    seen = sidecar.openai.requests[-1]
    assert seen["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen["body"] == CHAT_BODY

    (row,) = sidecar.rows(1)
    assert (row["idempotency_key"], row["provider"], row["model"], row["service"]) == (
        "req-plain:1", "openai", "gpt-3.5-turbo-0125", "openai",
    )  # fmt: skip
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 10, 5)
    s = sidecar.samples()
    assert _requests(s, "openai", "ok", "gpt-3.5-turbo-0125") == 1
    assert _tokens(s, "input", "openai", "gpt-3.5-turbo-0125") == 10
    assert _tokens(s, "output", "openai", "gpt-3.5-turbo-0125") == 5
    assert _cost(s, "openai", "gpt-3.5-turbo-0125") == pytest.approx(
        _price("openai", "gpt-3.5-turbo-0125", 10, 5), rel=1e-9
    )
    line = orjson.loads(
        next(x for x in sidecar.log.getvalue().splitlines() if '"gateway call"' in x)
    )
    assert (line["level"], line["route"], line["upstream"], line["input_tokens"]) == (
        "info", "openai", "openai", 10,
    )  # fmt: skip


def test_stream_without_include_usage_is_relayed_minus_the_usage_chunk(sidecar: Sidecar) -> None:
    with httpx.stream(
        "POST",
        sidecar.url + "/v1/chat/completions",
        json={**CHAT_BODY, "stream": True},
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "X-Request-Id": "req-stream"},
    ) as r:
        received = b"".join(r.iter_raw())
    # The gateway asked for usage; the client gets every other byte exactly as sent.
    assert sidecar.openai.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    expected = b"".join(e for e in sse_events(CHAT_STREAM) if b'"choices":[]' not in e)
    assert received == expected

    stream = sidecar.sdk().chat.completions.create(**CHAT_BODY, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hi, how are you?"
    )
    assert all(c.choices for c in chunks)

    rows = sidecar.rows(2)
    assert [(r["idempotency_key"][:11], r["input_tokens"], r["output_tokens"]) for r in rows] == [
        ("req-stream:", 10, 5),
        (rows[1]["idempotency_key"][:11], 10, 5),
    ]
    assert all(r["ttft_ms"] is not None and r["status"] == "ok" for r in rows)
    s = sidecar.samples()
    assert _tokens(s, "input", "openai", "gpt-3.5-turbo-0125") == 20
    assert _tokens(s, "output", "openai", "gpt-3.5-turbo-0125") == 10


def test_stream_with_include_usage_is_relayed_untouched(sidecar: Sidecar) -> None:
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream(
        "POST",
        sidecar.url + "/v1/chat/completions",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "Content-Type": "application/json"},
    ) as r:
        received = b"".join(r.iter_raw())
    assert received == CHAT_STREAM
    assert sidecar.openai.requests[-1]["body"] == body
    (row,) = sidecar.rows(1)
    assert (row["input_tokens"], row["output_tokens"]) == (10, 5)


def test_responses_stream_through_the_sdk(sidecar: Sidecar) -> None:
    with httpx.stream(
        "POST",
        sidecar.url + "/v1/responses",
        json={"model": "gpt-3.5-turbo-0125", "input": "Say some greetings", "stream": True},
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
    ) as r:
        assert b"".join(r.iter_raw()) == RESPONSES_STREAM
    events = list(
        sidecar.sdk().responses.create(model="gpt-3.5-turbo-0125", input="hi", stream=True)
    )
    assert events[-1].type == "response.completed"
    rows = sidecar.rows(2)
    assert [(r["operation"], r["input_tokens"], r["output_tokens"]) for r in rows] == [
        ("chat", 13, 12),
        ("chat", 13, 12),
    ]


def test_embeddings_and_models(sidecar: Sidecar) -> None:
    client = sidecar.sdk()
    result = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert result.usage.prompt_tokens == 8
    (row,) = sidecar.rows(1)
    assert (row["operation"], row["input_tokens"], row["output_tokens"]) == ("embedding", 8, 0)
    # /v1/models proxies the default route's first upstream...
    assert [m.id for m in client.models.list()] == ["openai-model"]
    # ...or merges every upstream of the default route, skipping one that is down.
    sidecar.gateway.config = replace(sidecar.gateway.config, models_endpoint="aggregate")
    assert [m.id for m in client.models.list()] == ["openai-model", "deepseek-model"]
    sidecar.openai.mode = "500"
    assert [m.id for m in client.models.list()] == ["deepseek-model"]


# ---------------------------------------------------------------- fallback


@pytest.mark.parametrize("failure", ["500", "429", "timeout", "refused"])
def test_nextjs_route_falls_back_to_deepseek(tmp_path: Path, failure: str) -> None:
    """POST /api/ai/openai with a chat body; OpenAI fails, DeepSeek answers."""
    with (
        fake_upstream("openai") as up_openai,
        fake_upstream("deepseek", chat_body=DEEPSEEK_CHAT) as up_deepseek,
    ):
        openai_url = f"http://127.0.0.1:{free_port()}" if failure == "refused" else up_openai.url
        up_openai.mode = {"500": "500", "429": "429", "timeout": "stall"}.get(failure, "ok")
        config = parse_gateway(_config(openai_url, up_deepseek.url, timeout_s=0.5), "test")
        recorder = Recorder(str(tmp_path / "gw.db"))
        log = io.StringIO()
        keys = {"openai": OPENAI_KEY, "deepseek": DEEPSEEK_KEY}
        gateway = Gateway(
            config, recorder, keys=keys, logger=CallLogger(log, secrets=keys.values())
        )
        app = create_app(
            recorder, gateway=gateway, gateway_tokens=[CLIENT_TOKEN], close_recorder=True
        )
        with serve_app(app) as url:
            r = httpx.post(
                url + "/api/ai/openai",
                json=CHAT_BODY,
                headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "X-Request-Id": "next-1"},
                timeout=10,
            )
            up_openai.release()
            assert r.status_code == 200
            assert r.content == DEEPSEEK_CHAT
            # The deepseek upstream got the mapped model and its own key.
            seen = up_deepseek.requests[-1]
            assert seen["body"]["model"] == "deepseek-chat"
            assert seen["headers"]["authorization"] == f"Bearer {DEEPSEEK_KEY}"
            _wait_events(recorder, tmp_path / "gw.db", 2)
            s = scrape(url)
        reason = {
            "500": "server",
            "429": "rate_limit",
            "timeout": "timeout",
            "refused": "connection",
        }[failure]
        assert _requests(s, "openai", "error", "gpt-4o-mini") == 1
        assert _requests(s, "deepseek", "ok", "deepseek-chat") == 1
        assert _tokens(s, "input", "deepseek", "deepseek-chat") == 14
        assert _tokens(s, "output", "deepseek", "deepseek-chat") == 9
        assert _tokens(s, "input", "openai", "gpt-4o-mini") == 0
        deepseek_cost = _price("deepseek", "deepseek-chat", 14, 9)
        assert deepseek_cost > 0
        assert _cost(s, "deepseek", "deepseek-chat") == pytest.approx(deepseek_cost, rel=1e-9)
        assert _cost(s, "openai", "gpt-4o-mini") == 0
        assert _fallbacks(s, reason) == 1
        assert sum(v for (name, _), v in s.items() if name == "ai_gateway_fallbacks_total") == 1
        with sqlite3.connect(tmp_path / "gw.db") as conn:
            rows = conn.execute(
                "SELECT idempotency_key, provider, status, error_type, level FROM events ORDER BY id"
            ).fetchall()
        expected_type = {"500": "server", "429": "rate_limit"}.get(failure, reason)
        assert rows == [
            ("next-1:1", "openai", "error", expected_type, "error"),
            ("next-1:2", "deepseek", "ok", None, "info"),
        ]
        levels = [orjson.loads(x)["level"] for x in log.getvalue().splitlines()]
        assert levels == ["warn", "info"]


def test_every_upstream_down_gives_502_naming_each(sidecar: Sidecar) -> None:
    sidecar.openai.mode = "500"
    sidecar.deepseek.mode = "429"
    r = httpx.post(
        sidecar.url + "/v1/chat/completions",
        json=CHAT_BODY,
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "X-Request-Id": "down-1"},
    )
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "upstreams_failed"
    assert [(a["upstream"], a["status"], a["error_type"]) for a in error["attempts"]] == [
        ("openai", 500, "server"),
        ("deepseek", 429, "rate_limit"),
    ]
    assert "openai: HTTP 500 (server)" in error["message"]
    assert "deepseek: HTTP 429 (rate_limit)" in error["message"]
    with pytest.raises(openai.InternalServerError):
        sidecar.sdk().chat.completions.create(**CHAT_BODY)
    rows = sidecar.rows(4)
    assert [(r["provider"], r["status"], r["error_type"]) for r in rows] == [
        ("openai", "error", "server"),
        ("deepseek", "error", "rate_limit"),
    ] * 2
    s = sidecar.samples()
    assert _fallbacks(s, "server") == 2
    assert [orjson.loads(x)["level"] for x in sidecar.log.getvalue().splitlines()] == [
        "warn", "error",
    ] * 2  # fmt: skip


def test_client_error_is_served_not_retried(sidecar: Sidecar) -> None:
    r = httpx.post(
        sidecar.url + "/v1/chat/completions",
        content=b'{"model": 5}',
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "model: expected a non-empty string, got 5"
    sidecar.recorder.limits = Limits(max_body_bytes=100)
    r = httpx.post(
        sidecar.url + "/v1/chat/completions",
        json={**CHAT_BODY, "messages": [{"role": "user", "content": "x" * 200}]},
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
    )
    assert (r.status_code, r.json()["error"]["message"]) == (
        413, "request body exceeds 100 bytes",
    )  # fmt: skip
    assert sidecar.openai.requests == [] and sidecar.rows() == []


# ---------------------------------------------------------------- disconnects and secrets


def test_client_that_disconnects_mid_stream_is_counted_once(sidecar: Sidecar) -> None:
    sidecar.openai.mode = "hold"
    with httpx.stream(
        "POST",
        sidecar.url + "/v1/chat/completions",
        json={**CHAT_BODY, "stream": True},
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "X-Request-Id": "gone-1"},
    ) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
    # The client is gone while the upstream still holds the stream open.
    assert sidecar.openai.stream_closed.wait(10), "the gateway kept the upstream stream open"
    sidecar.openai.release()
    sidecar.rows(1)
    time.sleep(0.2)  # a second record, if there were one, would land in this time
    rows = sidecar.rows()
    assert [
        (r["idempotency_key"], r["status"], r["error_type"], r["input_tokens"]) for r in rows
    ] == [("gone-1:1", "error", "cancelled", 0)]
    s = sidecar.samples()
    assert _requests(s, "openai", "error", "gpt-3.5-turbo-0125") == 1


def test_no_provider_key_in_any_log_line_ledger_row_or_response(sidecar: Sidecar) -> None:
    bodies: list[bytes] = []
    client = sidecar.sdk()
    bodies.append(
        client.chat.completions.with_raw_response.create(**CHAT_BODY).http_response.content
    )
    with client.chat.completions.with_streaming_response.create(**CHAT_BODY, stream=True) as s:
        bodies.append(b"".join(s.iter_bytes()))
        bodies.append(str(s.headers).encode())
    sidecar.openai.mode = "500"
    r = httpx.post(
        sidecar.url + "/api/ai/openai",
        json=CHAT_BODY,
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
    )
    bodies += [r.content, str(r.headers).encode()]
    sidecar.deepseek.mode = "500"
    r = httpx.post(
        sidecar.url + "/api/ai/openai",
        json=CHAT_BODY,
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
    )
    assert r.status_code == 502
    bodies += [r.content, str(r.headers).encode()]
    bodies.append(scrape_text(sidecar.url))
    # plain, stream, a fallback (the failed attempt and the served one), two failures
    assert len(sidecar.rows(6)) == 6
    ledger = b"".join(p.read_bytes() for p in sidecar.db.parent.glob("gw.db*"))
    log = sidecar.log.getvalue()
    assert len(log.splitlines()) >= 8  # info, debug bodies, warn, error lines were written
    for key in (OPENAI_KEY, DEEPSEEK_KEY):
        assert key not in log
        assert key.encode() not in ledger
        assert all(key.encode() not in b for b in bodies)
    # The upstreams did get their keys: the check above is not vacuous.
    assert sidecar.openai.requests[0]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"


def scrape_text(url: str) -> bytes:
    return httpx.get(url + "/metrics").content


def test_gateway_tokens_are_separate_from_write_tokens(sidecar: Sidecar) -> None:
    url = sidecar.url + "/v1/chat/completions"
    assert httpx.post(url, json=CHAT_BODY).status_code == 401
    wrong = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    assert httpx.post(url, json=CHAT_BODY, headers=wrong).status_code == 401
    usage = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1}
    as_gateway = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    assert httpx.post(sidecar.url + "/api/usage", json=usage, headers=as_gateway).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        sidecar.sdk(api_key="nope").models.list()
    assert sidecar.openai.requests == []


def test_unknown_route_is_a_404_naming_the_routes(sidecar: Sidecar) -> None:
    r = httpx.post(
        sidecar.url + "/api/ai/mistral",
        json=CHAT_BODY,
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
    )
    assert r.status_code == 404
    assert (
        r.json()["error"]["message"] == "no gateway route 'mistral'; configured: deepseek, openai"
    )


def test_without_include_usage_helper_matches_openai_reference() -> None:
    # The derived stream keeps every content chunk and drops the usage chunk and fields.
    derived = without_usage(CHAT_STREAM)
    assert b'"usage"' not in derived
    assert len(sse_events(derived)) == len(sse_events(CHAT_STREAM)) - 1


# ---------------------------------------------------------------- the serve command


def test_serve_with_a_gateway_section_logs_json_lines_without_keys(tmp_path: Path) -> None:
    with fake_upstream("openai") as up:
        config = tmp_path / "c.yaml"
        config.write_text(
            "gateway:\n"
            "  upstreams:\n"
            f"    openai: {{provider: openai, base_url: '{up.url}/v1', api_key_env: OPENAI_API_KEY}}\n"
        )
        env = {
            "OPENAI_API_KEY": OPENAI_KEY,
            "AI_USAGE_EXPORTER_GATEWAY_TOKEN": CLIENT_TOKEN,
            "LOG_LEVEL": "debug",
            "ENABLE_DETAILED_LOGGING": "1",
        }
        server = ServerProcess(tmp_path / "s.db", ["--config", str(config)], env)
        try:
            with OpenAI(base_url=server.url + "/v1", api_key=CLIENT_TOKEN, max_retries=0) as client:
                chunks = list(client.chat.completions.create(**CHAT_BODY, stream=True))
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hi, how are you?"
            assert up.requests[-1]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if scrape(server.url).get(
                    (
                        "ai_tokens_total",
                        frozenset(
                            {
                                "type": "input",
                                "service": "openai",
                                "provider": "openai",
                                "model": "gpt-3.5-turbo-0125",
                            }.items()
                        ),
                    )  # fmt: skip
                ):
                    break
                time.sleep(0.05)
            server.proc.terminate()
            output = server.proc.communicate(timeout=30)[0].decode()
            assert server.proc.returncode == 0
        finally:
            server.kill()
    lines = [orjson.loads(x) for x in output.splitlines() if x.startswith("{")]
    calls = [x for x in lines if x["msg"] == "gateway call"]
    assert [(c["level"], c["input_tokens"], c["output_tokens"], c["stream"]) for c in calls] == [
        ("info", 10, 5, True)
    ]
    assert [x["level"] for x in lines if x["msg"] == "gateway call bodies"] == ["debug"]
    assert OPENAI_KEY not in output


def test_serve_refuses_an_open_gateway_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI_USAGE_EXPORTER_WRITE_TOKEN", WRITE_TOKEN)
    monkeypatch.delenv("AI_USAGE_EXPORTER_GATEWAY_TOKEN", raising=False)
    monkeypatch.delenv("AI_USAGE_EXPORTER_GATEWAY_TOKENS", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("gateway:\n  upstreams:\n    a: {provider: openai, base_url: 'http://x'}\n")
    code = main(
        ["serve", "--host", "0.0.0.0", "--config", str(config), "--db", str(tmp_path / "x.db")]
    )
    assert code == 2
    assert "refusing to serve the gateway on 0.0.0.0 without a client token" in (
        capsys.readouterr().err
    )
