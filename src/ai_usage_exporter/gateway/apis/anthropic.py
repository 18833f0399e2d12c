"""Anthropic's Messages API: ``POST /v1/messages`` (plain and SSE) and
``/v1/messages/count_tokens``, as the Anthropic SDKs and Claude Code call it.

The client's ``anthropic-version`` and ``anthropic-beta`` headers and its query
(Claude Code sends ``?beta=true``) go upstream as sent; its token, ``x-api-key`` or
``Authorization: Bearer``, does not. Error bodies follow
https://docs.anthropic.com/en/api/errors: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from ai_usage_exporter.config.gateway import UpstreamConfig
from ai_usage_exporter.core.errortypes import OTHER, RATE_LIMIT, SERVER, TIMEOUT
from ai_usage_exporter.gateway.apis._base import (
    Framer,
    Operation,
    Outgoing,
    bearer,
    error_json,
    header_token,
    sse_framer,
    usage_model,
)

NAME = "anthropic"
OPERATIONS: dict[str, Operation] = {
    "messages": Operation("messages", "chat", "anthropic"),
    "count_tokens": Operation("count_tokens", None),
}
_PATHS = {"messages": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}

# Anthropic's error types by HTTP status (docs.anthropic.com/en/api/errors).
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_response(
    status: int,
    type: str | None,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    code: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """An error in Anthropic's shape; `type` defaults to the status's documented one and
    `code` (the gateway's own word for it) goes beside the message."""
    error: dict[str, Any] = {"type": type or error_type(status), "message": message}
    if code is not None:
        error["code"] = code
    if extra:
        error.update(extra)
    return error_json({"type": "error", "error": error}, status, headers)


def client_token(headers: Iterable[tuple[bytes, bytes]], query: bytes) -> bytes | None:
    # The SDKs send `x-api-key` for an API key and `Authorization: Bearer` for an auth
    # token (Claude Code's ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN).
    key = header_token(headers, b"x-api-key")
    return key if key is not None else bearer(headers)


def model_of(payload: Mapping[str, Any], params: Mapping[str, str]) -> Any:
    return payload.get("model")


def wants_stream(op: Operation, payload: Mapping[str, Any], params: Mapping[str, str]) -> bool:
    return payload.get("stream") is True and op.stream_format is not None


def outgoing(
    op: Operation,
    payload: dict[str, Any],
    body: bytes,
    model: str,
    stream: bool,
    params: Mapping[str, str],
    query: bytes,
    up: UpstreamConfig,
) -> Outgoing:
    upstream_model = up.upstream_model(model)
    if upstream_model != model:
        body = orjson.dumps({**payload, "model": upstream_model})
    return Outgoing(_PATHS[op.name], query.decode("latin-1"), body, upstream_model)


def stream_framer(content_type: str, params: Mapping[str, str]) -> Framer | None:
    return sse_framer() if content_type.startswith("text/event-stream") else None


usage_of = usage_model

# An in-stream error event's type -> the error_type it is recorded with.
_STREAM_ERRORS = {
    "overloaded_error": SERVER,
    "api_error": SERVER,
    "rate_limit_error": RATE_LIMIT,
    "timeout_error": TIMEOUT,
}


def stream_error(event: Any) -> str | None:
    """The error_type of an `error` event (sent after a 200, e.g. when overloaded midway)."""
    if not isinstance(event, dict) or event.get("type") != "error":
        return None
    error = event.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    return _STREAM_ERRORS.get(kind, OTHER) if isinstance(kind, str) else OTHER
