"""Fake Anthropic, Gemini and Azure OpenAI upstreams replaying recorded bodies and streams.

One Starlette app answers each provider's own paths as that provider does (sources in
tests/fixtures/gateway/SOURCES.md): Anthropic's /v1/messages (plain and SSE),
/v1/messages/count_tokens and /v1/models; Gemini's /{v1beta,v1}/models/{model}:{method}
(generateContent, streamGenerateContent as SSE with ``alt=sse`` and as a streamed JSON
array without, countTokens); Azure OpenAI's deployment paths, which want ``api-key`` and
``api-version`` and answer 401/404 in Azure's error shape otherwise. `mode` decides the
next answers: ``ok``, a status (``429``, ``529``, ``500``, ``503``), ``stall`` (nothing
until `release()`), ``hold`` (a stream that stops after two events until `release()`) or
``drop`` (a stream that closes after two events). Every request is kept.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from _server import serve_app

FIXTURES = Path(__file__).parent / "fixtures"
GATEWAY = FIXTURES / "gateway"
STREAMS = FIXTURES / "streams"

ANTHROPIC_TOOL_USE = (GATEWAY / "anthropic_tool_use.json").read_bytes()
ANTHROPIC_CACHE_5M = (GATEWAY / "anthropic_cache_write_5m.json").read_bytes()
ANTHROPIC_CACHE_5M_1H = (GATEWAY / "anthropic_cache_write_5m_1h.json").read_bytes()
# anthropic-sdk-python's own stream fixtures (tests/lib/streaming/fixtures/).
ANTHROPIC_STREAM_BASIC = (STREAMS / "anthropic_sdk_basic.sse").read_bytes() + b"\n\n"
ANTHROPIC_STREAM_DELTA = (STREAMS / "anthropic_sdk_message_delta_fields.sse").read_bytes()
ANTHROPIC_COUNT = b'{"input_tokens":2095}'
ANTHROPIC_MODELS = orjson.dumps(
    {
        "data": [
            {
                "type": "model",
                "id": "claude-sonnet-4-5-20250929",
                "display_name": "Claude Sonnet 4.5",
                "created_at": "2025-09-29T00:00:00Z",
            }
        ],
        "has_more": False,
        "first_id": "claude-sonnet-4-5-20250929",
        "last_id": "claude-sonnet-4-5-20250929",
    }
)
GEMINI_BODY = (GATEWAY / "gemini_generate_content_cached.json").read_bytes()
GEMINI_STREAM_SSE = (STREAMS / "gemini_cumulative_usage.sse").read_bytes()
GEMINI_STREAM_ARRAY = (GATEWAY / "gemini_stream_array.json").read_bytes()
GEMINI_COUNT = b'{"totalTokens":31,"promptTokensDetails":[{"modality":"TEXT","tokenCount":31}]}'
AZURE_CHAT = (GATEWAY / "azure_chat.json").read_bytes()

_ANTHROPIC_ERRORS = {429: "rate_limit_error", 500: "api_error", 503: "api_error",
                     529: "overloaded_error"}  # fmt: skip
_GEMINI_STATUS = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def sse_events(stream: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in stream.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]


def array_chunks(stream: bytes) -> list[bytes]:
    """The JSON array cut where Google's chunks end: after each element's separator."""
    parts = stream.split(b"\r\n,\r\n")
    return [p + b"\r\n,\r\n" for p in parts[:-1]] + [parts[-1]]


@dataclass
class FakeNative:
    name: str
    anthropic_body: bytes = ANTHROPIC_TOOL_USE
    anthropic_stream: bytes = ANTHROPIC_STREAM_DELTA
    gemini_body: bytes = GEMINI_BODY
    azure_deployment: str = "gpt-4o"
    azure_key: str = ""
    mode: str = "ok"
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    _release: threading.Event = field(default_factory=threading.Event)
    stream_closed: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self._release.set()

    async def _wait_release(self, timeout: float = 10.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._release.wait, timeout)

    def _keep(self, request: Request, raw: bytes) -> None:
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "body": orjson.loads(raw) if raw else None,
                "raw": raw,
            }
        )

    async def _failure(self, api: str) -> Response | None:
        if self.mode == "stall":
            await self._wait_release()
            return None
        if not self.mode.isdigit():
            return None
        status = int(self.mode)
        message = f"{self.name} says {status}"
        if api == "anthropic":
            body: Any = {"type": "error",
                         "error": {"type": _ANTHROPIC_ERRORS.get(status, "api_error"), "message": message}}  # fmt: skip
        else:
            body = {"error": {"code": status, "message": message,
                              "status": _GEMINI_STATUS.get(status, "INTERNAL")}}  # fmt: skip
        return Response(orjson.dumps(body), status, media_type="application/json")

    async def _events(self, events: list[bytes]) -> AsyncIterator[bytes]:
        try:
            for n, event in enumerate(events):
                if n == 2 and self.mode == "hold":
                    await self._wait_release()
                if n == 2 and self.mode == "drop":
                    raise ConnectionResetError("the fake drops the stream")
                yield event
                await asyncio.sleep(0)
        finally:
            self.stream_closed.set()

    def app(self) -> Starlette:
        async def messages(request: Request) -> Response:
            raw = await request.body()
            self._keep(request, raw)
            failed = await self._failure("anthropic")
            if failed is not None:
                return failed
            if request.url.path.endswith("/count_tokens"):
                return Response(ANTHROPIC_COUNT, media_type="application/json")
            if orjson.loads(raw).get("stream") is True:
                return StreamingResponse(
                    self._events(sse_events(self.anthropic_stream)),
                    media_type="text/event-stream; charset=utf-8",
                    headers={"request-id": "req_fake_stream"},
                )
            return Response(
                self.anthropic_body,
                media_type="application/json",
                headers={"request-id": "req_fake_plain"},
            )

        async def models(request: Request) -> Response:
            self._keep(request, b"")
            return Response(ANTHROPIC_MODELS, media_type="application/json")

        async def gemini(request: Request) -> Response:
            raw = await request.body()
            self._keep(request, raw)
            failed = await self._failure("gemini")
            if failed is not None:
                return failed
            method = request.path_params["target"].rpartition(":")[2]
            if method == "countTokens":
                return Response(GEMINI_COUNT, media_type="application/json")
            if method == "generateContent":
                return Response(self.gemini_body, media_type="application/json; charset=UTF-8")
            if request.query_params.get("alt") == "sse":
                return StreamingResponse(
                    self._events(sse_events(GEMINI_STREAM_SSE)), media_type="text/event-stream"
                )
            return StreamingResponse(
                self._events(array_chunks(GEMINI_STREAM_ARRAY)),
                media_type="application/json; charset=UTF-8",
            )

        async def azure(request: Request) -> Response:
            raw = await request.body()
            self._keep(request, raw)
            # Azure OpenAI's answers for a wrong key, a missing version and an unknown
            # deployment (learn.microsoft.com/azure/ai-services/openai/reference).
            if request.headers.get("api-key") != self.azure_key:
                body = {"error": {"code": "401", "message": "Access denied due to invalid "
                        "subscription key or wrong API endpoint."}}  # fmt: skip
                return Response(orjson.dumps(body), 401, media_type="application/json")
            if "api-version" not in request.query_params:
                body = {"error": {"code": "404", "message": "Resource not found"}}
                return Response(orjson.dumps(body), 404, media_type="application/json")
            if request.path_params["deployment"] != self.azure_deployment:
                body = {"error": {"code": "DeploymentNotFound", "message": "The API deployment "
                        "for this resource does not exist."}}  # fmt: skip
                return Response(orjson.dumps(body), 404, media_type="application/json")
            return Response(AZURE_CHAT, media_type="application/json",
                            headers={"apim-request-id": "fake-apim"})  # fmt: skip

        return Starlette(
            routes=[
                Route("/v1/messages", messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", messages, methods=["POST"]),
                Route("/v1/models", models, methods=["GET"]),
                Route("/v1beta/models/{target}", gemini, methods=["POST"]),
                Route("/v1/models/{target}", gemini, methods=["POST"]),
                Route("/openai/deployments/{deployment}/chat/completions", azure, methods=["POST"]),
            ]
        )


@contextmanager
def fake_native(name: str, **kwargs: Any) -> Iterator[FakeNative]:
    fake = FakeNative(name, **kwargs)
    with serve_app(fake.app()) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.release()
