"""A deadline for receiving a request's body: a sender too slow gets 408 and is cut off.

uvicorn has no such timeout (encode/uvicorn#157: `timeout_keep_alive` covers only the
idle time between requests, and any byte received disarms it), so a client that sends
its headers and then a body a byte at a time holds its connection, and a file
descriptor, for as long as it likes. This middleware wraps `receive`: the whole body
must arrive within `timeout` seconds of the request's start, or the request is
answered 408 with `Connection: close`, which makes uvicorn close the connection. Once
the body is complete, `receive` is left alone, so a long streamed response (the
gateway's) is never cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TIMEOUT_MESSAGE = "request body not received within {timeout:g} s; send the whole body at once"
BAD_TIMEOUT = "body timeout must be a number of seconds > 0, got {timeout!r}"


class BodyTimeoutMiddleware:
    """Answer 408 to a request whose body takes longer than `timeout` seconds to arrive."""

    def __init__(
        self, app: ASGIApp, timeout: float, on_timeout: Callable[[], None] | None = None
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(BAD_TIMEOUT.format(timeout=timeout))
        self.app = app
        self.timeout = float(timeout)
        self.on_timeout = on_timeout
        self._body = orjson.dumps(
            {"error": {"message": TIMEOUT_MESSAGE.format(timeout=self.timeout)}}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body_done = False
        timed_out = False
        gone = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out, gone
            if body_done or timed_out:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except TimeoutError:
                timed_out = True
                if self.on_timeout is not None:
                    self.on_timeout()
                if not started:
                    await self._answer_408(send)
                # To the app the sender is gone; whatever it answers is not sent.
                return {"type": "http.disconnect"}
            if message["type"] == "http.disconnect":
                gone = True
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            # The app's error about a body that stopped coming (Starlette's
            # ClientDisconnect), after our 408 or the client leaving midway, is no fault
            # of the app's: without this, each slow sender that gives up logs a traceback.
            if not (timed_out or gone):
                raise

    async def _answer_408(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 408,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._body)).encode()),
                    # uvicorn closes the connection after a response saying so.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._body})
