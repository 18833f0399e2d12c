"""Protobuf spans to plain values: the pure mapping never sees a protobuf message.

Only spans that look like GenAI (an attribute under a GenAI prefix) are converted;
every other span costs a glance at its attribute keys and one parent link, so a
mixed export pays little for the spans it skips.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

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


def collect(request: ExportTraceServiceRequest) -> Batch:
    """The request's spans, GenAI ones converted, the rest only linked to their parents."""
    out: list[SpanView] = []
    parents: dict[bytes, bytes] = {}
    skipped = 0
    total = 0
    prefixes = GENAI_PREFIXES
    for rs in request.resource_spans:
        resource: dict[str, Any] | None = None
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for span in ss.spans:
                total += 1
                parents[span.span_id] = span.parent_span_id
                kvs = span.attributes
                if not any(kv.key.startswith(prefixes) for kv in kvs):
                    skipped += 1
                    continue
                if resource is None:
                    resource = attributes(rs.resource.attributes)
                exception_type = None
                for ev in span.events:
                    if ev.name == "exception":
                        for kv in ev.attributes:
                            if kv.key == "exception.type":
                                exception_type = kv.value.string_value or None
                        break
                out.append(
                    SpanView(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        error=span.status.code == STATUS_ERROR,
                        status_message=span.status.message,
                        attrs={kv.key: value(kv.value) for kv in kvs},
                        sid=span.span_id,
                        pid=span.parent_span_id,
                        scope=scope,
                        resource=resource,
                        exception_type=exception_type,
                    )
                )
    return Batch(out, parents, skipped, total)
