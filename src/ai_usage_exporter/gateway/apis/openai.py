"""The OpenAI API (and every provider that copies it, Azure OpenAI included): Chat
Completions, the Responses API and embeddings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from ai_usage_exporter.config.gateway import UpstreamConfig
from ai_usage_exporter.gateway.apis._base import (
    Framer,
    Operation,
    Outgoing,
    bearer,
    error_json,
    error_object_type,
    sse_framer,
    usage_model,
)

NAME = "openai"
OPERATIONS: dict[str, Operation] = {
    "chat": Operation("chat", "chat", "openai_chat"),
    "responses": Operation("responses", "chat", "openai_responses"),
    "embeddings": Operation("embeddings", "embedding"),
}
_PATHS = {"chat": "/chat/completions", "responses": "/responses", "embeddings": "/embeddings"}


def error_response(
    status: int,
    type: str | None,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    code: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """An error in OpenAI's shape (`{"error": {"message", "type", "code"}}`), which the
    OpenAI SDKs surface as the exception's message."""
    body: dict[str, Any] = {"message": message, "type": type or "gateway_error", "code": code}
    if extra:
        body.update(extra)
    return error_json({"error": body}, status, headers)


def client_token(headers: Iterable[tuple[bytes, bytes]], query: bytes) -> bytes | None:
    return bearer(headers)


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
    """The body for this upstream: the model renamed if mapped, and usage asked for on a
    Chat stream (the chunk is cut from what the client sees when it did not ask)."""
    upstream_model = up.upstream_model(model)
    changes: dict[str, Any] = {}
    if upstream_model != model:
        changes["model"] = upstream_model
    strip = False
    if stream and op.name == "chat":
        options = payload.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            base = options if isinstance(options, dict) else {}
            changes["stream_options"] = {**base, "include_usage": True}
            strip = True
    if changes:
        body = orjson.dumps({**payload, **changes})
    # The client's query is not passed on (Azure's api-version comes from the config).
    return Outgoing(_PATHS[op.name], "", body, upstream_model, strip)


def stream_framer(content_type: str, params: Mapping[str, str]) -> Framer | None:
    return sse_framer() if content_type.startswith("text/event-stream") else None


usage_of = usage_model


# An error object inside a stream (`{"error": {...}}`) -> its error_type.
stream_error = error_object_type
