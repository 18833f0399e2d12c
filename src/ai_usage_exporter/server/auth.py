"""Bearer-token middleware: separate tokens for writing usage, reading metrics and the gateway."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

# The SDK reads its budgets' use with the write token it already holds.
WRITE_PATHS = frozenset(("/api/usage", "/api/budget-usage"))
READ_PATHS = frozenset(
    ("/api/metrics", "/metrics", "/metrics/fleet", "/api/metrics/timeseries", "/api/status")
)
# Every path under these is read-protected too (one route per report).
READ_PREFIXES = ("/api/reports/",)
# The gateway's routes (see gateway.routes) take their own client tokens.
GATEWAY_PREFIXES = ("/v1/", "/api/ai/")

MISSING_TOKEN = "this endpoint needs an Authorization: Bearer <token> header"
WRONG_TOKEN = "the bearer token is not valid for this endpoint"
EMPTY_TOKEN = "an empty token was configured; remove it or give a real token"


class BearerAuthMiddleware:
    """Checks `Authorization: Bearer` on write, read and gateway paths; others stay open.

    A scope with no configured tokens is open. Comparison is constant-time against
    every configured token, so several may be valid at once while rotating.
    """

    def __init__(
        self,
        app: ASGIApp,
        write_tokens: Sequence[str] = (),
        read_tokens: Sequence[str] = (),
        gateway_tokens: Sequence[str] = (),
        on_reject: Callable[[], None] | None = None,
    ) -> None:
        for token in (*write_tokens, *read_tokens, *gateway_tokens):
            if not token or not token.strip():
                raise ValueError(EMPTY_TOKEN)
        self.app = app
        self.write_tokens = [t.encode() for t in write_tokens]
        self.read_tokens = [t.encode() for t in read_tokens]
        self.gateway_tokens = [t.encode() for t in gateway_tokens]
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        tokens = (
            self.write_tokens
            if path in WRITE_PATHS
            else self.read_tokens
            if path in READ_PATHS or path.startswith(READ_PREFIXES)
            else self.gateway_tokens
            if path.startswith(GATEWAY_PREFIXES)
            else None
        )
        if not tokens:
            await self.app(scope, receive, send)
            return
        given = _bearer(scope)
        if given is None:
            await self._reject(send, MISSING_TOKEN)
            return
        ok = False
        for token in tokens:
            # No early exit: the time taken does not depend on which token matched.
            ok |= hmac.compare_digest(given, token)
        if not ok:
            await self._reject(send, WRONG_TOKEN)
            return
        await self.app(scope, receive, send)

    async def _reject(self, send: Send, message: str) -> None:
        if self.on_reject is not None:
            self.on_reject()
        body = orjson.dumps({"error": {"message": message}})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="ai-usage-exporter"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return bytes(token.strip())
            return None
    return None
