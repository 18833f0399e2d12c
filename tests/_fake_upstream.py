"""A fake OpenAI-compatible provider that replays recorded bodies and streams (tests/fixtures/gateway).

Each instance is a real HTTP server on a free port. Its `mode` decides the next
answers: ``ok``, ``500``, ``429``, ``stall`` (nothing until `release()`, so the
gateway's timeout fires first) or ``hold`` (a stream that stops after two events
until `release()`). Every request it receives is kept, headers included, so tests
can see what the gateway sent.
"""

from __future__ import annotations

import asyncio
import re
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

FIXTURES = Path(__file__).parent / "fixtures" / "gateway"
CHAT_STREAM = (FIXTURES / "openai_chat_stream_include_usage.sse").read_bytes()
RESPONSES_STREAM = (FIXTURES / "openai_responses_stream.sse").read_bytes()
DEEPSEEK_CHAT = (FIXTURES / "deepseek_chat.json").read_bytes()


def sse_events(stream: bytes) -> list[bytes]:
    """The stream's events, each with its terminating blank line."""
    return [e + b"\n\n" for e in stream.split(b"\n\n") if e]


def without_usage(stream: bytes) -> bytes:
    """The chat stream as OpenAI sends it when the client did not ask for usage."""
    events = [e for e in sse_events(stream) if b'"choices":[],"usage":{' not in e]
    return re.sub(rb',"usage":null', b"", b"".join(events))


def chat_body_from_stream(stream: bytes) -> bytes:
    """A plain completion assembled from a recorded stream: its id, model, text and usage."""
    chunks = [orjson.loads(e[len(b"data: ") :]) for e in sse_events(stream) if b"[DONE]" not in e]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    first, last = chunks[0], chunks[-1]
    return orjson.dumps(
        {
            "id": first["id"],
            "object": "chat.completion",
            "created": first["created"],
            "model": first["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": last["usage"],
            "service_tier": "default",
            "system_fingerprint": None,
        }
    )


OPENAI_CHAT = chat_body_from_stream(CHAT_STREAM)
EMBEDDING = orjson.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
)


@dataclass
class FakeUpstream:
    name: str
    chat_body: bytes = OPENAI_CHAT
    chat_stream: bytes = CHAT_STREAM
    mode: str = "ok"
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    _release: threading.Event = field(default_factory=threading.Event)
    stream_closed: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self._release.set()

    async def _wait_release(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._release.wait, timeout)

    def app(self) -> Starlette:
        async def failure(status: int) -> Response:
            body = {"error": {"message": f"{self.name} says {status}", "type": "server_error"}}
            return Response(orjson.dumps(body), status, media_type="application/json")

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            payload = orjson.loads(raw) if raw else {}
            self.requests.append(
                {"path": request.url.path, "headers": dict(request.headers), "body": payload}
            )
            if self.mode in ("500", "429"):
                return await failure(int(self.mode))
            if self.mode == "stall":
                await self._wait_release()
            path = request.url.path
            if path.endswith("/embeddings"):
                return Response(EMBEDDING, media_type="application/json")
            if path.endswith("/models"):
                data = {"object": "list", "data": [{"id": f"{self.name}-model", "object": "model"}]}
                return Response(orjson.dumps(data), media_type="application/json")
            if not payload.get("stream"):
                return Response(self.chat_body, media_type="application/json")
            if path.endswith("/responses"):
                stream = RESPONSES_STREAM
            else:
                options = payload.get("stream_options") or {}
                stream = (
                    self.chat_stream
                    if options.get("include_usage")
                    else without_usage(self.chat_stream)
                )
            return StreamingResponse(self._events(stream), media_type="text/event-stream")

        routes = [
            Route(p, endpoint, methods=["POST"])
            for p in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")
        ]
        routes.append(Route("/v1/models", endpoint, methods=["GET"]))
        return Starlette(routes=routes)

    async def _events(self, stream: bytes) -> AsyncIterator[bytes]:
        try:
            for n, event in enumerate(sse_events(stream)):
                if n == 2 and self.mode == "hold":
                    await self._wait_release()
                yield event
                await asyncio.sleep(0)
        finally:
            self.stream_closed.set()


@contextmanager
def fake_upstream(name: str, **kwargs: Any) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(name, **kwargs)
    with serve_app(fake.app()) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.release()
