"""Protobuf spans to plain values: the pure mapping never sees a protobuf message.

An export is first split into its spans' undecoded bytes; only a span whose bytes
hold a GenAI attribute prefix is decoded and converted, so a mixed export pays a
substring search for each span it skips.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError as _ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

# An attribute under one of these makes a span worth reading; see families.py.
GENAI_PREFIXES: tuple[str, ...] = (
    "gen_ai.",
    "llm.",
    "ai.",
    "openinference.",
    "traceloop.",
    "spring.ai.",
)
# Deeper values are cut: a nested array or map this deep is no usage count of anyone's.
MAX_VALUE_DEPTH = 8
STATUS_ERROR = 2


@dataclass(slots=True)
class SpanView:
    """One span as plain values; ids are lowercase hex, times nanoseconds since the epoch."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start_ns: int
    end_ns: int
    error: bool
    status_message: str
    attrs: dict[str, Any]
    sid: bytes = b""
    pid: bytes = b""
    scope: str = ""
    resource: Mapping[str, Any] = field(default_factory=dict)
    # The `exception.type` of the span's first exception event, if any.
    exception_type: str | None = None


@dataclass(slots=True)
class Batch:
    """An export's GenAI spans, the parent link of every span, and how many were not GenAI."""

    spans: list[SpanView]
    parents: dict[bytes, bytes]
    not_genai: int
    total: int
    undecodable: list[str] = field(default_factory=list)


def value(v: AnyValue, depth: int = 0) -> Any:
    """An OTLP AnyValue as a Python value (arrays as lists, maps as dicts)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if depth >= MAX_VALUE_DEPTH:
        return None
    if kind == "array_value":
        return [value(x, depth + 1) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def attributes(kvs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


def _light_request_type() -> type[Message]:
    """ExportTraceServiceRequest's outline: each span kept as its undecoded bytes.

    Wire-compatible with the real message (same field numbers; a length-delimited
    field read as bytes), so protobuf's own runtime splits an export into spans in C,
    and only the spans that can be GenAI are decoded as `Span`.
    """
    fdp = descriptor_pb2.FileDescriptorProto(
        name="ai_usage_exporter/otlp/outline.proto",
        package="ai_usage_exporter.otlp.outline",
        syntax="proto3",
    )
    f = descriptor_pb2.FieldDescriptorProto
    layout = {
        "Request": [("resource_spans", 1, f.TYPE_MESSAGE, f.LABEL_REPEATED, "ResourceSpans")],
        "ResourceSpans": [
            ("resource", 1, f.TYPE_BYTES, f.LABEL_OPTIONAL, ""),
            ("scope_spans", 2, f.TYPE_MESSAGE, f.LABEL_REPEATED, "ScopeSpans"),
        ],
        "ScopeSpans": [
            ("scope", 1, f.TYPE_BYTES, f.LABEL_OPTIONAL, ""),
            ("spans", 2, f.TYPE_BYTES, f.LABEL_REPEATED, ""),
        ],
    }
    for name, fields in layout.items():
        m = fdp.message_type.add(name=name)
        for fname, number, kind, label, type_name in fields:
            field_ = m.field.add(name=fname, number=number, type=kind, label=label)
            if type_name:
                field_.type_name = f".ai_usage_exporter.otlp.outline.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls: type[Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("ai_usage_exporter.otlp.outline.Request")
    )
    return cls


_Outline = _light_request_type()
# Every GenAI attribute key holds one of these; "ai." covers gen_ai., spring.ai. and the
# AI SDK's ai.*. A span without any is not GenAI and is never decoded. (A match in a
# value, "openai.com", only costs the span its full decode.)
_NEEDLES = (b"ai.", b"llm.", b"openinference.", b"traceloop.")


class SpanDecodeError(ValueError):
    """The export's outline is not a valid ExportTraceServiceRequest."""


def collect(body: bytes) -> Batch:
    """An encoded ExportTraceServiceRequest's GenAI spans; the rest are only counted.

    Parent links are kept for the GenAI spans: attribution walks from a call up through
    its GenAI ancestors (agent, workflow), never through an HTTP or database span.
    A GenAI-looking span that does not decode is returned in `undecodable`.
    """
    try:
        outline: Any = _Outline.FromString(body)
    except (_ProtobufDecodeError, RecursionError) as exc:
        raise SpanDecodeError(
            f"body is not a valid protobuf ExportTraceServiceRequest: {exc}"
        ) from None
    out: list[SpanView] = []
    parents: dict[bytes, bytes] = {}
    undecodable: list[str] = []
    skipped = 0
    total = 0
    prefixes = GENAI_PREFIXES
    a, b, c, d = _NEEDLES
    for rs in outline.resource_spans:
        resource: dict[str, Any] | None = None
        for ss in rs.scope_spans:
            scope: str | None = None
            for raw in ss.spans:
                total += 1
                if not (a in raw or b in raw or c in raw or d in raw):
                    skipped += 1
                    continue
                try:
                    span = Span.FromString(raw)
                except (_ProtobufDecodeError, RecursionError) as exc:
                    undecodable.append(f"span {total - 1} of the export does not decode: {exc}")
                    continue
                kvs = span.attributes
                if not any(kv.key.startswith(prefixes) for kv in kvs):
                    skipped += 1
                    continue
                if resource is None:
                    resource = _decode_attrs(Resource, rs.resource)
                if scope is None:
                    scope = _scope_name(ss.scope)
                parents[span.span_id] = span.parent_span_id
                exception_type = None
                for ev in span.events:
                    if ev.name == "exception":
                        for kv in ev.attributes:
                            if kv.key == "exception.type":
                                exception_type = kv.value.string_value or None
                        break
                status = span.status
                out.append(
                    SpanView(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        error=status.code == STATUS_ERROR,
                        status_message=status.message,
                        attrs={kv.key: value(kv.value) for kv in kvs},
                        sid=span.span_id,
                        pid=span.parent_span_id,
                        scope=scope,
                        resource=resource,
                        exception_type=exception_type,
                    )
                )
    return Batch(out, parents, skipped, total, undecodable)


def _decode_attrs(message: Any, raw: bytes) -> dict[str, Any]:
    try:
        return attributes(message.FromString(raw).attributes)
    except (_ProtobufDecodeError, RecursionError):
        return {}


def _scope_name(raw: bytes) -> str:
    try:
        return str(InstrumentationScope.FromString(raw).name)
    except (_ProtobufDecodeError, RecursionError):
        return ""
