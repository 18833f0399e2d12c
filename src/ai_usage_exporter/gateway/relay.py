"""Relay one upstream SSE stream to the client as it arrives, folding a copy for usage.

Bytes go to the client exactly as the upstream sent them. The one exception is the
usage-only chunk of an OpenAI chat stream when the gateway, not the client, asked
for it (`stream_options.include_usage`): then the stream is forwarded event by event
and that event's bytes are left out. When the client goes away the upstream request
is closed and the call is still recorded, once, with what was seen.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ai_usage_exporter.core.shapes.streams import StreamFolder
from ai_usage_exporter.gateway.sse import SSEFramer, data_of
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
        on_done: Callable[[StreamOutcome], Awaitable[None]],
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
        self._framer = SSEFramer()
        self._drained = False

    def _fold(self, blocks: list[bytes]) -> list[bytes]:
        """Feed each event to the folder; the blocks to forward (all but a stripped one)."""
        keep: list[bytes] = []
        folder = self._outcome.folder
        for block in blocks:
            data = data_of(block)
            if data is not None:
                event = folder.add_data(data)
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
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            outcome.client_gone = True
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch_disconnect)
                await self._pump(send)
                tg.cancel_scope.cancel()
        finally:
            outcome.ended = time.perf_counter()
            # A stream read to its end gives its connection back to the pool; one cut
            # short (client gone, upstream error) is closed, as its rest is unread.
            if self._drained:
                self._upstream.release()
            else:
                self._upstream.close()
            with anyio.CancelScope(shield=True):
                await self._on_done(outcome)

    async def _pump(self, send: Send) -> None:
        outcome = self._outcome
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        out = self._forward(self._first)
        if out:
            await send({"type": "http.response.body", "body": out, "more_body": True})
        try:
            async for chunk in self._body:
                out = self._forward(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            self._drained = True
        except TRANSPORT_ERRORS as exc:
            # After the first byte nothing can fall back; the client gets what came.
            outcome.error = exc
        tail = self._framer.tail()
        if tail:
            kept = self._fold([tail])
            if self._strip and kept:
                await send({"type": "http.response.body", "body": tail, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
