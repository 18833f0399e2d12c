"""The wire APIs the gateway relays: one module each, one shape for the proxy to use.

Each module (`openai`, `anthropic`, `gemini`) says which operations its API has, where
the client's token is, how an upstream's request is built from the client's, how its
streams are framed, where a plain body carries usage and model, and how its errors look
(`error_response`, a pure function any part of the gateway may call to refuse a call in
the client's own API). Fallback (`gateway.fallback`) and recording (`gateway.proxy`)
are the same for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from starlette.responses import Response

from ai_usage_exporter.config.gateway import UpstreamConfig
from ai_usage_exporter.gateway.apis import anthropic, gemini, openai
from ai_usage_exporter.gateway.apis._base import Framer, Operation, Outgoing, header

__all__ = ("APIS", "Api", "Framer", "Operation", "Outgoing", "api_for_request")


class Api(Protocol):
    NAME: str
    OPERATIONS: dict[str, Operation]

    def error_response(
        self,
        status: int,
        type: str | None,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Response: ...

    def client_token(
        self, headers: Iterable[tuple[bytes, bytes]], query: bytes
    ) -> bytes | None: ...

    def model_of(self, payload: Mapping[str, Any], params: Mapping[str, str]) -> Any: ...

    def wants_stream(
        self, op: Operation, payload: Mapping[str, Any], params: Mapping[str, str]
    ) -> bool: ...

    def outgoing(
        self,
        op: Operation,
        payload: dict[str, Any],
        body: bytes,
        model: str,
        stream: bool,
        params: Mapping[str, str],
        query: bytes,
        up: UpstreamConfig,
    ) -> Outgoing: ...

    def stream_framer(self, content_type: str, params: Mapping[str, str]) -> Framer | None: ...

    def usage_of(self, parsed: Mapping[str, Any]) -> tuple[Any, Any]: ...

    def stream_error(self, event: Any) -> str | None: ...


APIS: dict[str, Api] = {"openai": openai, "anthropic": anthropic, "gemini": gemini}


def api_for_request(path: str, headers: Iterable[tuple[bytes, bytes]]) -> Api:
    """The API a gateway request speaks, from its path (and, for the one path two APIs
    share, GET /v1/models, the `anthropic-version` header Anthropic clients send)."""
    if path.startswith("/api/ai/"):
        # /api/ai/<route>/<the API's own path>
        rest = path[len("/api/ai/") :]
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
    if path.startswith("/v1/messages"):
        return anthropic
    if path.startswith("/v1beta/") or (path.startswith("/v1/models/") and ":" in path):
        return gemini
    if path == "/v1/models" and header(headers, b"anthropic-version") is not None:
        return anthropic
    return openai
