"""The gateway's pure parts: the config section, SSE framing, the fallback policy, call logs."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from _fake_upstream import CHAT_STREAM, sse_events
from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.gateway import parse_gateway, read_keys
from ai_usage_exporter.config.settings import resolve
from ai_usage_exporter.core.errortypes import error_type_for_exception
from ai_usage_exporter.gateway.apis import openai as openai_api
from ai_usage_exporter.gateway.calllog import CallLogger
from ai_usage_exporter.gateway.fallback import (
    fallback_reason_for_exception,
    fallback_reason_for_status,
)
from ai_usage_exporter.gateway.proxy import Gateway, _Call
from ai_usage_exporter.gateway.sse import SSEFramer, data_of
from ai_usage_exporter.recorder.recorder import Recorder
from ai_usage_exporter.server import create_app

CONFIG = """\
gateway:
  upstreams:
    openai:   {provider: openai,   base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
    deepseek: {provider: deepseek, base_url: https://api.deepseek.com/v1, api_key_env: DEEPSEEK_API_KEY,
               models: {gpt-4o-mini: deepseek-chat}, timeout_s: 30}
  routes:
    openai: {upstreams: [openai, deepseek]}
    deepseek: {upstreams: [deepseek]}
  default_route: openai
  timeout_s: 60
"""


def test_the_issue_example_config_parses(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    settings = resolve({"config": str(path)}, environ={"AI_USAGE_EXPORTER_GATEWAY_TOKEN": "t1,t2"})
    gw = settings.gateway
    assert gw is not None
    assert gw.default_route == "openai"
    assert gw.routes["openai"].upstreams == ("openai", "deepseek")
    ds = gw.upstreams["deepseek"]
    assert (ds.provider, ds.base_url, ds.timeout_s) == (
        "deepseek",
        "https://api.deepseek.com/v1",
        30.0,
    )
    assert ds.upstream_model("gpt-4o-mini") == "deepseek-chat"
    assert ds.upstream_model("gpt-4o") == "gpt-4o"
    assert gw.upstreams["openai"].timeout_s == 60.0
    assert settings.gateway_tokens == ("t1", "t2")
    keys = read_keys(gw, {"OPENAI_API_KEY": "sk-a", "DEEPSEEK_API_KEY": "sk-b"})
    assert keys == {"openai": "sk-a", "deepseek": "sk-b"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "gateway:\n  upstreams:\n    a: {provider: openai, base_url: 'https://x/v1'}\n  routes:\n    r: {upstreams: [a, b]}\n",
            "c.yaml:5: route 'r' names upstream 'b', which is not defined; defined: a",
        ),
        (
            "gateway:\n  upstreams:\n    a: {provider: openai, base_url: 'https://k:sk-1@x/v1'}\n",
            "c.yaml:3: base_url must not carry credentials or a query; use api_key_env",
        ),
        (
            "gateway:\n  upstreams:\n    a: {provider: openai, base_url: 'https://x', api_key_env: 'sk-123'}\n",
            "c.yaml:3: api_key_env must name an environment variable (the key itself never goes in the file), got 'sk-123'",
        ),
        (
            "gateway:\n  upstreams:\n    a: {provider: openai, base_url: 'ftp://x'}\n",
            "c.yaml:3: base_url must be an http(s) URL, got 'ftp://x'",
        ),
        (
            "gateway:\n  upstreams:\n    a: {provider: openai, base_url: 'https://x'}\n  default_route: b\n",
            "c.yaml:4: default_route 'b' is not a route; routes: a",
        ),
        (
            "gateway:\n  upstreams:\n    a: {provider: openai, base_url: 'https://x', timeout_s: 0}\n",
            "c.yaml:3: expected a number of seconds > 0, got 0",
        ),
        (
            "gateway:\n  upstream: {}\n",
            "c.yaml:2: unknown key 'upstream'; did you mean 'upstreams'? known: client_tokens, connect_timeout_s, default_route, default_routes, key_cache_s, models_endpoint, rate_limits, routes, timeout_s, upstreams",
        ),
    ],
)
def test_bad_gateway_sections_name_the_line(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(section)
    with pytest.raises(ConfigError) as info:
        resolve({"config": str(path)}, environ={})
    assert str(info.value) == f"{tmp_path}/{message}"


def test_a_named_key_variable_must_be_set() -> None:
    gw = parse_gateway(
        {"upstreams": {"a": {"provider": "openai", "base_url": "https://x", "api_key_env": "K"}}},
        "c.yaml",
    )
    with pytest.raises(ConfigError) as info:
        read_keys(gw, {"K": " "})
    assert str(info.value) == (
        "gateway upstream 'a': environment variable K is not set or empty; "
        "set it to the provider's API key"
    )
    # Without routes each upstream is its own route.
    assert gw.default_route == "a" and gw.routes["a"].upstreams == ("a",)


def test_framer_keeps_every_byte_across_any_split() -> None:
    stream = CHAT_STREAM.replace(b"\n\n", b"\r\n\r\n", 3)
    for size in (1, 7, 64, len(stream)):
        framer = SSEFramer()
        blocks: list[bytes] = []
        for i in range(0, len(stream), size):
            blocks += framer.feed(stream[i : i + size])
        assert b"".join(blocks) + framer.tail() == stream
        assert len(blocks) == len(sse_events(CHAT_STREAM))
    assert data_of(b'event: x\ndata: {"a":\ndata: 1}\n\n') == '{"a":\n1}'
    assert data_of(b"data:[DONE]\r\n\r\n") == "[DONE]"
    assert data_of(b": keep-alive\n\n") is None
    # A field line without a colon is that field with an empty value (WHATWG).
    assert data_of(b"data\n\n") == ""


def test_the_one_data_line_reading_agrees_with_the_sse_parser() -> None:
    from ai_usage_exporter.core.shapes.sse import parse_sse

    def parsed(block: bytes) -> str | None:
        events = parse_sse(block)
        return events[0][1] if events else None

    blocks = [
        b'data: {"a":1}\n\n',
        b'event: message_start\ndata: {"type":"message_start"}\n\n',
        b"data: [DONE]\n\n",
        b"data:x\n\n",  # no space: the parser's reading
        b"data: \xff\xfe\n\n",  # not UTF-8: replaced alike
        b"event: e\ndata: a\ndata: b\n\n",
        b"event: e\n\n",
        b"event:\ndata: \n\n",
        b"\xef\xbb\xbfdata: bom\n\n",
        b"data: cr\r\n\r\n",
        b"data: a\rdata: b\n\n",
        b"data: unterminated",
        b"id: 1\ndata: x\n\n",
    ]
    for block in blocks:
        assert data_of(block) == parsed(block), block
    for block in SSEFramer().feed(CHAT_STREAM):
        assert data_of(block) == parsed(block), block


class _Content:
    def __init__(self, eof: bool) -> None:
        self.eof = eof

    def at_eof(self) -> bool:
        return self.eof


class _Upstream:
    """What StreamRelay uses of an aiohttp response."""

    def __init__(self, eof: bool) -> None:
        self.content = _Content(eof)
        self.ended: list[str] = []

    def release(self) -> None:
        self.ended.append("released")

    def close(self) -> None:
        self.ended.append("closed")


def _relay(upstream: _Upstream, body: Any, first: bytes, done: list[Any]) -> Any:
    from ai_usage_exporter.core.shapes.streams import StreamFolder
    from ai_usage_exporter.gateway.relay import StreamOutcome, StreamRelay

    return StreamRelay(
        upstream,  # type: ignore[arg-type]
        body,
        first,
        status_code=200,
        headers=[],
        outcome=StreamOutcome(StreamFolder("openai_chat"), time.perf_counter()),
        strip_usage=False,
        on_done=done.append,
    )


def test_a_stream_that_came_whole_goes_out_in_one_body_without_a_watcher() -> None:
    sent: list[dict[str, Any]] = []
    done: list[Any] = []
    upstream = _Upstream(eof=True)

    async def receive() -> dict[str, Any]:
        raise AssertionError("nothing waits on the client when the upstream has ended")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def nothing() -> Any:
        if False:
            yield b""

    relay = _relay(upstream, nothing(), CHAT_STREAM, done)
    asyncio.run(relay({}, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert (sent[1]["body"], sent[1]["more_body"]) == (CHAT_STREAM, False)
    assert upstream.ended == ["released"] and len(done) == 1
    assert done[0].folder.finished and not done[0].client_gone


def test_a_client_leaving_ends_the_relay_but_another_cancellation_goes_on() -> None:
    async def hang() -> Any:
        await asyncio.sleep(3600)
        yield b""

    async def send(message: dict[str, Any]) -> None:
        pass

    async def leaves() -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    done: list[Any] = []
    upstream = _Upstream(eof=False)
    first = CHAT_STREAM[:40]
    asyncio.run(_relay(upstream, hang(), first, done)({}, leaves, send))
    assert upstream.ended == ["closed"] and len(done) == 1 and done[0].client_gone

    async def stays() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def cancelled_from_outside() -> None:
        task = asyncio.create_task(_relay(upstream, hang(), first, done)({}, stays, send))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    done.clear()
    upstream.ended.clear()
    asyncio.run(cancelled_from_outside())
    assert upstream.ended == ["closed"] and len(done) == 1 and not done[0].client_gone


def test_fallback_policy() -> None:
    assert [fallback_reason_for_status(s) for s in (200, 400, 401, 404, 429, 500, 503, 504)] == [
        None, None, None, None, "rate_limit", "server", "server", "timeout",
    ]  # fmt: skip
    # What the gateway's client (aiohttp) raises, and what the recorded error_type is.
    cases = [
        (aiohttp.ClientConnectionError("refused"), "connection"),
        (aiohttp.ClientOSError(111, "Connect call failed"), "connection"),
        (aiohttp.ServerDisconnectedError(), "connection"),
        (aiohttp.ClientPayloadError("cut short"), "connection"),
        (aiohttp.ServerTimeoutError("slow"), "timeout"),
        (aiohttp.ConnectionTimeoutError("slow"), "timeout"),
        (aiohttp.SocketTimeoutError("slow"), "timeout"),
        (TimeoutError(), "timeout"),
    ]
    assert [(fallback_reason_for_exception(e), error_type_for_exception(e)) for e, _ in cases] == [
        (want, want) for _, want in cases
    ]
    request = httpx.Request("POST", "http://x")
    assert fallback_reason_for_exception(httpx.ReadTimeout("slow", request=request)) == "timeout"
    assert (
        fallback_reason_for_exception(httpx.RemoteProtocolError("eof", request=request))
        == "connection"
    )


def test_call_logger_levels_detail_and_secrets() -> None:
    out = io.StringIO()
    logger = CallLogger.from_env(
        {"LOG_LEVEL": "warn"}, stream=out, secrets=["sk-live-SECRETVALUE123"]
    )
    logger.log("info", "gateway call", input_tokens=3)
    logger.log("warn", "gateway fallback", detail="key sk-live-SECRETVALUE123 refused")
    logger.bodies("bodies", request={"x": 1})
    (line,) = out.getvalue().splitlines()
    record = orjson.loads(line)
    assert (record["level"], record["msg"], record["detail"]) == (
        "warn", "gateway fallback", "key [REDACTED] refused",
    )  # fmt: skip

    out = io.StringIO()
    logger = CallLogger.from_env(
        {"LOG_LEVEL": "debug", "ENABLE_DETAILED_LOGGING": "true"}, stream=out
    )
    logger.bodies(
        "bodies",
        request={"api_key": "abc", "max_tokens": 5, "messages": ["Bearer abcdefghijkl"]},
        usage={"prompt_tokens_details": {"cached_tokens": 2}},
    )
    record = orjson.loads(out.getvalue())
    assert record["request"] == {
        "api_key": "[REDACTED]",
        "max_tokens": 5,
        "messages": ["[REDACTED]"],
    }
    assert record["usage"] == {"prompt_tokens_details": {"cached_tokens": 2}}
    with pytest.raises(ValueError, match="LOG_LEVEL must be one of"):
        CallLogger(level="verbose")


def test_calls_served_in_one_loop_turn_are_recorded_together_but_an_odd_one_alone(
    tmp_path: Path,
) -> None:
    gw_config = parse_gateway(
        {"upstreams": {"a": {"provider": "openai", "base_url": "https://x", "api_key_env": "K"}}},
        "c.yaml",
    )
    out = io.StringIO()
    with Recorder(str(tmp_path / "l.db"), CollectorRegistry()) as recorder:
        gateway = Gateway(gw_config, recorder, keys={"a": "sk-k"}, logger=CallLogger(out))
        up = gw_config.upstreams["a"]

        async def serve_three() -> None:
            for n, usage in enumerate(
                [{"prompt_tokens": 3, "completion_tokens": 1}, {"prompt_tokens": -1}, None]
            ):
                call = _Call(gw_config.routes["a"], openai_api, openai_api.OPERATIONS["chat"],
                             {}, b"", "gpt-4o-mini", False, {}, b"{}", f"r{n}", [])  # fmt: skip
                event = gateway._event(call, 1, up, "gpt-4o-mini", time.time(), 2.0)
                gateway._finish(call, event, 200, usage, None, b"{}")
            assert gateway._served and not out.getvalue()  # waits for the end of the turn
            await asyncio.sleep(0)

        asyncio.run(serve_three())
        recorder.flush()
        rows = sorted(recorder.ledger.events(), key=lambda r: r["idempotency_key"])
    # The negative count is refused on its own; the calls beside it are kept.
    assert [(r["idempotency_key"], r["input_tokens"]) for r in rows] == [("r0:1", 3), ("r2:1", 0)]
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["request_id"], x.get("input_tokens")) for x in lines] == [
        ("r0", 3), ("r1", None), ("r2", 0),
    ]  # fmt: skip


def test_the_gateway_records_operations_in_the_sdks_words() -> None:
    from ai_usage_exporter import OPERATION_CHAT, OPERATION_EMBEDDING
    from ai_usage_exporter.gateway.apis import APIS

    recorded = {
        (api, name): op.recorded for api, mod in APIS.items() for name, op in mod.OPERATIONS.items()
    }
    assert recorded == {
        ("openai", "chat"): OPERATION_CHAT,
        ("openai", "responses"): OPERATION_CHAT,
        ("openai", "embeddings"): OPERATION_EMBEDDING,
        ("anthropic", "messages"): OPERATION_CHAT,
        ("anthropic", "count_tokens"): None,  # bills nothing, so relayed unrecorded
        ("gemini", "generateContent"): OPERATION_CHAT,
        ("gemini", "streamGenerateContent"): OPERATION_CHAT,
        ("gemini", "countTokens"): None,
    }


def test_every_route_of_a_gateway_sidecar_is_in_its_openapi_document(tmp_path: Path) -> None:
    from starlette.routing import Route
    from starlette.testclient import TestClient

    gw_config = parse_gateway(
        {"upstreams": {"a": {"provider": "openai", "base_url": "https://x", "api_key_env": "K"}}},
        "c.yaml",
    )
    with Recorder(str(tmp_path / "l.db"), CollectorRegistry()) as recorder:
        gateway = Gateway(gw_config, recorder, keys={"a": "k"}, logger=CallLogger(io.StringIO()))
        app = create_app(recorder, gateway=gateway)
        served = {
            (r.path, m.lower())
            for r in app.routes
            if isinstance(r, Route) and r.path != "/openapi.json"
            for m in r.methods or ()
            if m != "HEAD"
        }
        with TestClient(app) as client:
            with_gateway = client.get("/openapi.json").json()["paths"]
        documented = {(p, m) for p, ops in with_gateway.items() for m in ops}
        assert documented == served
        plain = create_app(recorder)
        with TestClient(plain) as client:
            without = client.get("/openapi.json").json()["paths"]
        assert "/v1/chat/completions" not in without and "/api/usage" in without
