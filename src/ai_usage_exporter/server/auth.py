"""Bearer-token middleware: separate tokens for writing usage, reading metrics and the gateway."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

# The gateway's own reading of a client's token (each API has its header: x-api-key,
# x-goog-api-key, ?key=...) and its refusal, in that API's error shape.
TokenOf = Callable[[Scope], bytes | None]
Refusal = Callable[[Scope, str], Callable[[Scope, Receive, Send], Awaitable[None]]]

# The SDK reads its budgets' use with the write token it already holds; OTLP exporters
# send it from OTEL_EXPORTER_OTLP_HEADERS (these win over the gateway's /v1/ prefix).
WRITE_PATHS = frozenset(
    ("/api/usage", "/api/budget-usage", "/v1/traces", "/v1/metrics", "/v1/logs")
)
READ_PATHS = frozenset(
    ("/api/metrics", "/metrics", "/metrics/fleet", "/api/metrics/timeseries", "/api/status")
)
# Every path under these is read-protected too (one route per report).
READ_PREFIXES = ("/api/reports/",)
# The gateway's routes (see gateway.routes) take their own client tokens.
GATEWAY_PREFIXES = ("/v1/", "/v1beta/", "/api/ai/")

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
        gateway_token: TokenOf | None = None,
        gateway_refusal: Refusal | None = None,
    ) -> None:
        for token in (*write_tokens, *read_tokens, *gateway_tokens):
            if not token or not token.strip():
                raise ValueError(EMPTY_TOKEN)
        self.app = app
        self.write_tokens = [t.encode() for t in write_tokens]
        self.read_tokens = [t.encode() for t in read_tokens]
        self.gateway_tokens = [t.encode() for t in gateway_tokens]
        self.on_reject = on_reject
        self.gateway_token = gateway_token
        self.gateway_refusal = gateway_refusal

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
        native = tokens is self.gateway_tokens and self.gateway_token is not None
        given = self.gateway_token(scope) if native and self.gateway_token else _bearer(scope)
        if given is None:
            await self._reject(scope, receive, send, MISSING_TOKEN, native)
            return
        ok = False
        for token in tokens:
            # No early exit: the time taken does not depend on which token matched.
            ok |= hmac.compare_digest(given, token)
        if not ok:
            await self._reject(scope, receive, send, WRONG_TOKEN, native)
            return
        await self.app(scope, receive, send)

    async def _reject(
        self, scope: Scope, receive: Receive, send: Send, message: str, native: bool
    ) -> None:
        if self.on_reject is not None:
            self.on_reject()
        if native and self.gateway_refusal is not None:
            await self.gateway_refusal(scope, message)(scope, receive, send)
            return
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
