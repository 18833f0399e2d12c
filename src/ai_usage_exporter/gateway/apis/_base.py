"""What every wire API the gateway speaks tells the proxy: its operations, tokens and errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.responses import Response

from ai_usage_exporter.core.errortypes import OTHER, error_type_for_status
from ai_usage_exporter.gateway.sse import SSEFramer


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass(frozen=True, slots=True)
class Operation:
    """One kind of call an API offers, and how the gateway treats it."""

    name: str  # in the call logs: chat, responses, embeddings, messages, count_tokens...
    # The event's `operation` (the SDK's word for the same call); None: relayed, not
    # recorded, since it bills nothing (count_tokens).
    recorded: str | None
    # The StreamFolder format of its streams; None when it never streams.
    stream_format: str | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The request one upstream gets: path under its base_url, query, body."""

    path: str
    query: str
    body: bytes
    model: str  # the model as that upstream knows it
    strip_usage: bool = False  # cut the usage chunk the gateway asked for


class Framer(Protocol):
    """Cuts a streamed body into events; `data` gives one event's JSON payload."""

    def feed(self, chunk: bytes) -> list[bytes]: ...

    def tail(self) -> bytes: ...

    def data(self, block: bytes) -> str | bytes | None: ...


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def error_json(body: Any, status: int, headers: Mapping[str, str] | None) -> Response:
    """An API's error body as the response every API's `error_response` returns."""
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def header_token(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """A token sent bare in header `name` (``x-api-key``, ``x-goog-api-key``), if not blank."""
    value = header(headers, name)
    if value is not None and value.strip():
        return bytes(value.strip())
    return None


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    value = header(headers, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return bytes(token.strip())
    return None


def without_params(query: bytes | str, names: frozenset[str]) -> str:
    """The query string minus some parameters, the rest as the client sent it."""
    raw = query.decode("latin-1") if isinstance(query, bytes) else query
    if not raw:
        return ""
    if not any(f"{n}=" in raw for n in names):
        return raw
    kept = [(k, v) for k, v in parse_qsl(raw, keep_blank_values=True) if k not in names]
    return urlencode(kept)


def sse_framer() -> Framer:
    return SSEFramer()


def usage_model(parsed: Mapping[str, Any]) -> tuple[Any, Any]:
    """`usage` and `model` of a plain body, where OpenAI and Anthropic both put them."""
    return parsed.get("usage"), parsed.get("model")


def error_object_type(event: Any) -> str | None:
    """The error_type of an error object sent inside a stream (`{"error": {...}}`), as
    OpenAI-compatible providers and Gemini send one: by its HTTP `code`, else other."""
    if not isinstance(event, dict):
        return None
    error = event.get("error")
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return error_type_for_status(code)
    return OTHER
