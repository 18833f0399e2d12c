"""OTLP request bodies to protobuf messages: one decode path for protobuf and JSON.

As the Collector's otlpreceiver does: the content type and encoding are checked before
anything is decoded, the size limit holds after decompression too, and a JSON body is
read into the same message type as a protobuf one, so everything after this module
sees one shape.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as _ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ai_usage_exporter.otlp.jsonspans import NotPlain, collect_json
from ai_usage_exporter.otlp.spans import Batch, SpanDecodeError, collect

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ENCODINGS = ("gzip", "deflate", "identity")

M = TypeVar("M", bound=Message)

# Fields OTLP/JSON writes as hex where protobuf's JSON mapping expects base64.
_HEX_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class DecodeError(Exception):
    """A body we cannot read; `status` is the HTTP answer OTLP asks for."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`; missing -> ''."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_content_type(content_type: str | None) -> str:
    """The media type if OTLP/HTTP allows it, else a 415 naming the value."""
    mt = media_type(content_type)
    if mt not in (PROTOBUF, JSON):
        raise DecodeError(
            415,
            f"unsupported content type {content_type or '(none)'!r}; OTLP/HTTP sends "
            f"{PROTOBUF} or {JSON}",
        )
    return mt


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with its Content-Encoding undone, refusing more than `limit` bytes out."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        if len(body) > limit:
            raise DecodeError(413, f"request body exceeds {limit} bytes")
        return body
    if enc == "gzip":
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    elif enc == "deflate":
        # RFC 9110's deflate is the zlib format; some senders send it raw, so both are read.
        d = zlib.decompressobj(wbits=zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS)
    else:
        raise DecodeError(
            415, f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or none"
        )
    try:
        # One byte over the limit is enough to know: a bomb is never inflated whole.
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DecodeError(400, f"body is not valid {enc}: {exc}") from None
    if len(out) > limit:
        raise DecodeError(413, f"request body exceeds {limit} bytes once decompressed")
    if not d.eof:
        raise DecodeError(400, f"body is not valid {enc}: the stream is truncated")
    return out


def parse(message: type[M], body: bytes, mt: str) -> M:
    """`body` (already decompressed) as `message`; 400 when it is not one."""
    out = message()
    if mt == PROTOBUF:
        try:
            out.ParseFromString(body)
        except (_ProtobufDecodeError, RecursionError) as exc:
            raise DecodeError(
                400, f"body is not a valid protobuf {message.__name__}: {exc}"
            ) from None
        return out
    value = json_object(body, message.__name__)
    try:
        _hex_ids_to_base64(value, 0)
        json_format.ParseDict(value, out, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise DecodeError(400, f"body is not a valid OTLP/JSON {message.__name__}: {exc}") from None
    return out


def json_object(body: bytes, name: str) -> dict[str, Any]:
    """A JSON body's top-level object; 400 when it is not JSON or not an object."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DecodeError(400, f"body must be a JSON object ({name}), got {type(value).__name__}")
    return value


def _hex_ids_to_base64(value: object, depth: int) -> None:
    """Rewrite OTLP/JSON's hex trace and span ids as the base64 protobuf's JSON mapping reads."""
    if depth > 64:
        raise ValueError("nesting is deeper than 64 levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _HEX_ID_FIELDS and isinstance(item, str):
                try:
                    raw = bytes.fromhex(item)
                except ValueError:
                    raise ValueError(f"{key} {item[:40]!r} is not hex") from None
                value[key] = base64.b64encode(raw).decode()
            elif isinstance(item, dict | list):
                _hex_ids_to_base64(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                _hex_ids_to_base64(item, depth + 1)


def trace_batch(body: bytes, mt: str) -> Batch:
    """A decompressed /v1/traces body's GenAI spans, protobuf or JSON alike.

    Plain OTLP/JSON is read straight from the parsed object (`jsonspans`); any other
    JSON goes through protobuf's JSON mapping and `collect`, like protobuf itself.
    """
    if mt == JSON:
        value = json_object(body, ExportTraceServiceRequest.__name__)
        try:
            return collect_json(value)
        except (NotPlain, RecursionError):
            pass
    try:
        return collect(trace_body(body, mt))
    except SpanDecodeError as exc:
        raise DecodeError(400, str(exc)) from None


def trace_body(body: bytes, mt: str) -> bytes:
    """A decompressed /v1/traces body as protobuf bytes: the one form `spans.collect` reads.

    Protobuf passes as it is (collect splits it); JSON is read into the real message and
    written back, so both formats meet in one decode path.
    """
    if mt == PROTOBUF:
        return body
    return bytes(parse(ExportTraceServiceRequest, body, mt).SerializeToString())


def decode(
    message: type[M], body: bytes, content_type: str | None, encoding: str | None, limit: int
) -> tuple[M, str]:
    """Check, decompress and parse an OTLP/HTTP body; returns the message and its media type."""
    mt = check_content_type(content_type)
    return parse(message, decompress(body, encoding, limit), mt), mt


def encode(message: Message, mt: str) -> bytes:
    """A response message in the request's own format, as OTLP/HTTP answers."""
    if mt == PROTOBUF:
        return message.SerializeToString()
    return bytes(orjson.dumps(json_format.MessageToDict(message)))
