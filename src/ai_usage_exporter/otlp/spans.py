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


def _keyed_span_type() -> type[Message]:
    """`Span` with its attributes read as a map of key to AnyValue.

    OTLP's `repeated KeyValue` (key = 1, value = 2) is, on the wire, exactly a protobuf
    map entry, so protobuf's runtime reads it either way; as a map the keys come out
    without a KeyValue wrapper each, which is most of what converting a span costs.
    A repeated key keeps its last value, as the dict built from the list would.
    """
    fdp = descriptor_pb2.FileDescriptorProto()
    Span.DESCRIPTOR.file.CopyToProto(fdp)
    kept = next(m for m in fdp.message_type if m.name == "Span")
    del fdp.message_type[:]
    fdp.message_type.append(kept)
    span = fdp.message_type[0]  # the appended copy, which is what the file holds
    del fdp.enum_type[:]
    fdp.name = "ai_usage_exporter/otlp/keyed_span.proto"
    fdp.package = "ai_usage_exporter.otlp.keyed"
    entry = span.nested_type.add(name="AttributesEntry")
    entry.options.map_entry = True
    f = descriptor_pb2.FieldDescriptorProto
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    entry.field.add(
        name="value",
        number=2,
        type=f.TYPE_MESSAGE,
        label=f.LABEL_OPTIONAL,
        type_name=".opentelemetry.proto.common.v1.AnyValue",
    )
    own = ".opentelemetry.proto.trace.v1.Span."
    for message in (span, *span.nested_type):
        for field_ in message.field:
            if field_.name == "attributes" and message is span:
                field_.type_name = ".ai_usage_exporter.otlp.keyed.Span.AttributesEntry"
            elif field_.type_name.startswith(own):
                field_.type_name = (
                    ".ai_usage_exporter.otlp.keyed.Span." + field_.type_name[len(own) :]
                )
    del fdp.dependency[:]
    fdp.dependency.extend(
        ("opentelemetry/proto/common/v1/common.proto", "opentelemetry/proto/trace/v1/trace.proto")
    )
    pool = descriptor_pool.DescriptorPool()
    for dep in (AnyValue, Span):
        dep_proto = descriptor_pb2.FileDescriptorProto()
        dep.DESCRIPTOR.file.CopyToProto(dep_proto)
        for name in dep_proto.dependency:
            _add_file(pool, name)
        _add_file(pool, dep_proto.name)
    pool.Add(fdp)
    cls: type[Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("ai_usage_exporter.otlp.keyed.Span")
    )
    return cls


def _add_file(pool: descriptor_pool.DescriptorPool, name: str) -> None:
    try:
        pool.FindFileByName(name)
        return
    except KeyError:
        pass
    source = descriptor_pool.Default().FindFileByName(name)
    proto = descriptor_pb2.FileDescriptorProto()
    source.CopyToProto(proto)
    for dep in proto.dependency:
        _add_file(pool, dep)
    pool.Add(proto)


_KeyedSpan = _keyed_span_type()
_SCALARS = frozenset(("string_value", "int_value", "double_value", "bool_value"))
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
    scalars = _SCALARS
    decode_span = _KeyedSpan.FromString
    first, *others = _NEEDLES
    for rs in outline.resource_spans:
        resource: dict[str, Any] | None = None
        for ss in rs.scope_spans:
            scope: str | None = None
            raws = ss.spans
            # The rarer needles are looked for once in the scope's spans together (a
            # search per span costs more than decoding it); only if one is there
            # anywhere is each span searched for it.
            together = b"".join(raws) if len(raws) > 1 else b""
            rare = [n for n in others if n in together] if together else others
            for raw in raws:
                total += 1
                if not (first in raw or (rare and any(n in raw for n in rare))):
                    skipped += 1
                    continue
                try:
                    span: Any = decode_span(raw)
                except (_ProtobufDecodeError, RecursionError) as exc:
                    undecodable.append(f"span {total - 1} of the export does not decode: {exc}")
                    continue
                attrs: dict[str, Any] = {}
                genai = False
                # Keys, then a lookup each: the map's items() is collections.abc's view,
                # a Python-level generator step per attribute (about a quarter slower).
                kvs = span.attributes
                for key in kvs:
                    v = kvs[key]
                    # Most values are strings: a non-empty one is told without WhichOneof.
                    text = v.string_value
                    if text:
                        attrs[key] = text
                    else:
                        kind = v.WhichOneof("value")
                        attrs[key] = getattr(v, kind) if kind in scalars else value(v)
                    if not genai and key.startswith(prefixes):
                        genai = True
                if not genai:
                    skipped += 1
                    continue
                if resource is None:
                    resource = _decode_attrs(Resource, rs.resource)
                if scope is None:
                    scope = _scope_name(ss.scope)
                sid = span.span_id
                pid = span.parent_span_id
                parents[sid] = pid
                status = span.status
                error = status.code == STATUS_ERROR
                out.append(
                    SpanView(
                        span.trace_id.hex(),
                        sid.hex(),
                        pid.hex(),
                        span.name,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        error,
                        status.message,
                        attrs,
                        sid,
                        pid,
                        scope,
                        resource,
                        _exception_type(span) if error else None,
                    )
                )
    return Batch(out, parents, skipped, total, undecodable)


def _exception_type(span: Any) -> str | None:
    """The `exception.type` of a failed span's first exception event."""
    for ev in span.events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.type":
                    return str(kv.value.string_value) or None
            return None
    return None


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
