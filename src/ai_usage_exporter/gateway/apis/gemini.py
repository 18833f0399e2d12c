"""The Gemini API: ``POST /{v1beta,v1}/models/{model}:generateContent``,
``:streamGenerateContent`` (SSE with ``alt=sse``, else one JSON array streamed element by
element) and ``:countTokens``, as google-genai and Gemini CLI call it.

The model is in the path, so a `models:` mapping renames the path, not the body. The
client's token (``x-goog-api-key`` or ``?key=``) is never passed upstream; the upstream's
key is added. Errors follow Google's shape (https://ai.google.dev/gemini-api/docs/troubleshooting):
``{"error": {"code", "message", "status"}}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.responses import Response

from ai_usage_exporter.config.gateway import UpstreamConfig
from ai_usage_exporter.gateway.apis._base import (
    Framer,
    Operation,
    Outgoing,
    bearer,
    error_json,
    error_object_type,
    header_token,
    sse_framer,
    without_params,
)
from ai_usage_exporter.gateway.jsonarray import JSONArrayFramer

NAME = "gemini"
OPERATIONS: dict[str, Operation] = {
    "generateContent": Operation("generate_content", "chat", "gemini"),
    "streamGenerateContent": Operation("stream_generate_content", "chat", "gemini"),
    "countTokens": Operation("count_tokens", None),
}
VERSIONS = ("v1beta", "v1")
_CLIENT_KEY = frozenset({"key"})

# google.rpc.Code names by HTTP status, as the Gemini API answers them.
STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_status(status: int) -> str:
    if status in STATUSES:
        return STATUSES[status]
    return "FAILED_PRECONDITION" if status < 500 else "INTERNAL"


def error_response(
    status: int,
    type: str | None,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    code: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """An error in Google's shape; `type` is the status name (default: the HTTP status's)
    and `code` (the gateway's own word) goes in an ErrorInfo detail, as Google's own do."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": type or error_status(status),
    }
    if code is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": code,
                "domain": "ai-usage-exporter",
            }
        ]
    if extra:
        error.update(extra)
    return error_json({"error": error}, status, headers)


def client_token(headers: Iterable[tuple[bytes, bytes]], query: bytes) -> bytes | None:
    key = header_token(headers, b"x-goog-api-key")
    if key is not None:
        return key
    if b"key=" in query:
        for k, v in parse_qsl(query.decode("latin-1")):
            if k == "key" and v.strip():
                return v.strip().encode("latin-1")
    return bearer(headers)


def model_of(payload: Mapping[str, Any], params: Mapping[str, str]) -> Any:
    return params.get("model")


def wants_stream(op: Operation, payload: Mapping[str, Any], params: Mapping[str, str]) -> bool:
    return params.get("method") == "streamGenerateContent"


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
    path = f"/{params['version']}/models/{quote(upstream_model, safe='-._~')}:{params['method']}"
    return Outgoing(path, without_params(query, _CLIENT_KEY), body, upstream_model)


def stream_framer(content_type: str, params: Mapping[str, str]) -> Framer | None:
    if content_type.startswith("text/event-stream"):
        return sse_framer()
    if content_type.startswith("application/json"):
        return JSONArrayFramer()
    return None


def usage_of(parsed: Mapping[str, Any]) -> tuple[Any, Any]:
    return (
        parsed.get("usageMetadata") or parsed.get("usage_metadata"),
        parsed.get("modelVersion") or parsed.get("model_version"),
    )


# An error object inside a stream (`{"error": {...}}`) -> its error_type.
stream_error = error_object_type
