"""Relay one upstream stream (SSE, or a streamed JSON array) to the client as it arrives, folding a copy for usage.

Bytes go to the client exactly as the upstream sent them. The one exception is the
usage-only chunk of an OpenAI chat stream when the gateway, not the client, asked
for it (`stream_options.include_usage`): then the stream is forwarded event by event
and that event's bytes are left out. When the client goes away the upstream request
is closed and the call is still recorded, once, with what was seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ai_usage_exporter.core.shapes.streams import StreamFolder
from ai_usage_exporter.gateway.apis import Framer
from ai_usage_exporter.gateway.sse import SSEFramer
from ai_usage_exporter.gateway.upstream import TRANSPORT_ERRORS


@dataclass(slots=True)
class StreamOutcome:
    """What the relay saw, for the record: usage, model, timing and how it ended."""

    folder: StreamFolder
    started: float  # perf_counter at the attempt's start
    first_byte: float | None = None
    ended: float | None = None
    error: BaseException | None = None
    client_gone: bool = False
    # The error_type of an error event the provider sent inside the stream (Anthropic's
    # `overloaded_error` after a 200), the first one seen.
    stream_error: str | None = None


class StreamRelay(Response):
    """An ASGI response that pumps an upstream stream; `on_done` runs once it ended."""

    def __init__(
        self,
        upstream: aiohttp.ClientResponse,
        body: AsyncIterator[bytes],
        first: bytes,
        *,
        status_code: int,
        headers: list[tuple[bytes, bytes]],
        outcome: StreamOutcome,
        strip_usage: bool,
        on_done: Callable[[StreamOutcome], None],
        framer: Framer | None = None,
        stream_error: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.raw_headers = headers
        self._upstream = upstream
        self._body = body
        self._first = first
        self._outcome = outcome
        self._strip = strip_usage
        self._on_done = on_done
        # SSE events by default; Gemini's JSON array streams element by element.
        self._framer: Framer = framer if framer is not None else SSEFramer()
        self._stream_error = stream_error
        self._drained = False
        self._watcher: asyncio.Task[None] | None = None

    def _fold(self, blocks: list[bytes]) -> list[bytes]:
        """Feed each event to the folder; the blocks to forward (all but a stripped one)."""
        keep: list[bytes] = []
        folder = self._outcome.folder
        for block in blocks:
            data = self._framer.data(block)
            if data is not None:
                event = folder.add_data(data)
                if self._stream_error is not None and self._outcome.stream_error is None:
                    self._outcome.stream_error = self._stream_error(event)
                if self._strip and isinstance(event, dict) and folder.is_usage_only(event):
                    continue
            keep.append(block)
        return keep

    def _forward(self, chunk: bytes) -> bytes:
        blocks = self._framer.feed(chunk)
        if not self._strip:
            self._fold(blocks)
            return chunk
        return b"".join(self._fold(blocks))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = self._outcome
        pump = asyncio.current_task()
        assert pump is not None
        try:
            try:
                await self._pump(send, receive, pump)
            except asyncio.CancelledError:
                # Ours (the client left) is absorbed; any other cancellation goes on.
                if not outcome.client_gone or pump.uncancel() > 0:
                    raise
        finally:
            # Before any await: once the response is complete `receive` answers
            # http.disconnect, which must not count as the client leaving.
            if self._watcher is not None:
                self._watcher.cancel()
            outcome.ended = time.perf_counter()
            # A stream read to its end gives its connection back to the pool; one cut
            # short (client gone, upstream error) is closed, as its rest is unread.
            if self._drained:
                self._upstream.release()
            else:
                self._upstream.close()
            # Not awaited: nothing here can be cancelled halfway.
            self._on_done(outcome)

    def _watch(self, receive: Receive, pump: asyncio.Task[Any]) -> None:
        """Notice a client that goes away while the pump waits on the upstream.

        One plain task that cancels the pump, not a task group (anyio's costs several
        times as much per call), and only once the pump has to wait: a stream that
        arrived whole before the first byte went out needs none.
        """

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self._outcome.client_gone = True
                    pump.cancel()
                    return

        self._watcher = asyncio.get_running_loop().create_task(watch())

    async def _pump(self, send: Send, receive: Receive, pump: asyncio.Task[Any]) -> None:
        outcome = self._outcome
        content = self._upstream.content
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        out = self._forward(self._first)
        try:
            # The upstream's end already read (often the whole stream came in the first
            # read): what is left goes out with the end of the response, in one write.
            while not content.at_eof():
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if self._watcher is None:
                    self._watch(receive, pump)
                chunk = await anext(self._body, None)
                if chunk is None:
                    out = b""
                    break
                out = self._forward(chunk)
            self._drained = True
        except TRANSPORT_ERRORS as exc:
            # After the first byte nothing can fall back; the client gets what came.
            outcome.error = exc
            out = b""
        tail = self._framer.tail()
        if tail:
            kept = self._fold([tail])
            if self._strip and kept:
                out += tail
        await send({"type": "http.response.body", "body": out, "more_body": False})
