"""OTLP/JSON exports read straight into a `Batch`, the shape `spans.collect` gives protobuf.

Protobuf's JSON mapping (`json_format.ParseDict`) walks every field of every span in
Python, about 150 µs a span here: an OpenTelemetry JS exporter's default JSON export of
512 spans cost some 80 ms before a single span was mapped. The body is already a dict
once orjson has read it, so the GenAI spans are taken from it directly, the way
`collect` takes them from protobuf: a span whose attribute keys have no GenAI prefix is
only counted, as the protobuf path never decodes it either.

The fast path takes only the shape OTLP/JSON writes (lowerCamelCase field names from the
proto descriptors, hex ids, the AnyValue forms). Anything else, a snake_case name, a
null, a field of the wrong kind in a span it reads, raises `NotPlain`, and the caller
parses the body with protobuf's JSON mapping instead, which accepts whatever that
mapping accepts and words the error when nothing can be read. So both routes give the
same `Batch` wherever the fast one answers (tests/test_otlp_json.py holds them to it).
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from ai_usage_exporter.otlp.spans import (
    GENAI_PREFIXES,
    MAX_VALUE_DEPTH,
    STATUS_ERROR,
    Batch,
    SpanView,
)


class NotPlain(Exception):
    """The body is not in the plain OTLP/JSON shape: parse it with protobuf's JSON mapping."""


def _names(message: type[Message], *leave_out: str) -> frozenset[str]:
    return frozenset(f.json_name for f in message.DESCRIPTOR.fields) - set(leave_out)


_REQUEST = _names(ExportTraceServiceRequest)
_RESOURCE_SPANS = _names(ResourceSpans)
_SCOPE_SPANS = _names(ScopeSpans)
_SPAN = _names(Span)
_EVENT = _names(Span.Event)
_STATUS = _names(Status)
_RESOURCE = _names(Resource)
_SCOPE = _names(InstrumentationScope)
# The profiles signal's string-table indexes mean nothing in a trace export.
_KEY_VALUE = _names(KeyValue, "keyStrindex")
_VALUE = _names(AnyValue, "stringValueStrindex")
_VALUES = frozenset(("values",))  # an ArrayValue's or KeyValueList's one field
_STATUS_CODES: dict[str, int] = dict(Status.StatusCode.items())
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1
_DOUBLE_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def collect_json(request: object) -> Batch:
    """An OTLP/JSON ExportTraceServiceRequest (as orjson read it) as `collect` reads protobuf.

    Raises `NotPlain` for anything outside the plain shape; nothing is half-read then,
    the caller starts again with the full parse.
    """
    req = _object(request, _REQUEST)
    out: list[SpanView] = []
    parents: dict[bytes, bytes] = {}
    skipped = 0
    total = 0
    prefixes = GENAI_PREFIXES
    span_names = _SPAN
    for rs in _list(req.get("resourceSpans")):
        rs = _object(rs, _RESOURCE_SPANS)
        resource: dict[str, Any] | None = None
        for ss in _list(rs.get("scopeSpans")):
            ss = _object(ss, _SCOPE_SPANS)
            scope: str | None = None
            for span in _list(ss.get("spans")):
                total += 1
                if type(span) is not dict or not span_names.issuperset(span):
                    raise NotPlain
                kvs = span.get("attributes")
                genai = False
                if kvs:
                    if type(kvs) is not list:
                        raise NotPlain
                    for kv in kvs:
                        key = kv.get("key", "") if type(kv) is dict else None
                        if type(key) is not str:
                            raise NotPlain
                        if key.startswith(prefixes):
                            genai = True
                            break
                if not genai:
                    # Read no further, as protobuf's path never decodes such a span; its
                    # ids are still checked, as protobuf's JSON mapping would refuse them.
                    for name in ("traceId", "spanId", "parentSpanId"):
                        if name in span:
                            _id(span[name])
                    skipped += 1
                    continue
                if resource is None:
                    resource = _resource(rs.get("resource"))
                if scope is None:
                    scope = _scope(ss.get("scope"))
                sid = _id(span.get("spanId", ""))
                pid = _id(span.get("parentSpanId", ""))
                status = _object(span.get("status", {}), _STATUS)
                code = status.get("code", 0)
                if type(code) is str:
                    if code not in _STATUS_CODES:
                        raise NotPlain
                    code = _STATUS_CODES[code]
                elif type(code) is not int:
                    raise NotPlain
                error = code == STATUS_ERROR
                parents[sid] = pid
                out.append(
                    SpanView(
                        _id(span.get("traceId", "")).hex(),
                        sid.hex(),
                        pid.hex(),
                        _str(span.get("name", "")),
                        _uint64(span.get("startTimeUnixNano", 0)),
                        _uint64(span.get("endTimeUnixNano", 0)),
                        error,
                        _str(status.get("message", "")),
                        _attributes(kvs),
                        sid,
                        pid,
                        scope,
                        resource,
                        _exception_type(span.get("events")) if error else None,
                    )
                )
    return Batch(out, parents, skipped, total)


def _object(raw: object, names: frozenset[str]) -> dict[str, Any]:
    if type(raw) is not dict or not names.issuperset(raw):
        raise NotPlain
    return raw


def _list(raw: object) -> list[Any]:
    if raw is None:
        return []  # absent (orjson gives no None for an absent key; `get` does)
    if type(raw) is not list:
        raise NotPlain
    return raw


def _str(raw: object) -> str:
    if type(raw) is not str:
        raise NotPlain
    return raw


def _id(raw: object) -> bytes:
    """A trace or span id: OTLP/JSON writes it as hex."""
    if type(raw) is not str:
        raise NotPlain
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise NotPlain from None


def _uint64(raw: object) -> int:
    # At most 20 digits: int() refuses thousands of them with a ValueError of its own.
    if type(raw) is str and raw.isdigit() and raw.isascii() and len(raw) <= 20:
        n = int(raw)
    elif type(raw) is int:
        n = raw
    else:
        raise NotPlain
    if not 0 <= n <= _UINT64_MAX:
        raise NotPlain
    return n


def _attributes(kvs: object, depth: int = 0) -> dict[str, Any]:
    """A list of KeyValue (a span's attributes, or a kvlistValue's values) as a dict."""
    out: dict[str, Any] = {}
    for kv in _list(kvs):
        kv = _object(kv, _KEY_VALUE)
        # A repeated key keeps its last value, as protobuf's map reading does.
        out[_str(kv.get("key", ""))] = _value(kv.get("value", {}), depth)
    return out


def _value(raw: object, depth: int) -> Any:
    """An AnyValue as `spans.value` gives it: lists, dicts, bytes as hex; cut below 8 levels."""
    if type(raw) is not dict or len(raw) > 1 or not _VALUE.issuperset(raw):
        raise NotPlain  # a oneof holds one value
    if not raw:
        return None
    ((kind, v),) = raw.items()
    if kind == "stringValue":
        return _str(v)
    if kind == "intValue":
        if type(v) is str:
            digits = v[1:] if v[:1] == "-" else v
            if not (digits.isdigit() and digits.isascii() and len(digits) <= 19):
                raise NotPlain
            v = int(v)
        elif type(v) is not int:
            raise NotPlain
        if not _INT64[0] <= v <= _INT64[1]:
            raise NotPlain
        return v
    if kind == "doubleValue":
        if type(v) is int or type(v) is float:
            return float(v)
        if type(v) is str and v in _DOUBLE_WORDS:
            return _DOUBLE_WORDS[v]
        raise NotPlain
    if kind == "boolValue":
        if type(v) is not bool:
            raise NotPlain
        return v
    if kind == "bytesValue":
        try:
            return base64.b64decode(_str(v), validate=True).hex()
        except binascii.Error:
            raise NotPlain from None
    # arrayValue or kvlistValue: {"values": [...]}
    inner = _object(v, _VALUES)
    if depth >= MAX_VALUE_DEPTH:
        return None
    if kind == "arrayValue":
        return [_value(x, depth + 1) for x in _list(inner.get("values"))]
    return _attributes(inner.get("values"), depth + 1)


def _resource(raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    return _attributes(_object(raw, _RESOURCE).get("attributes"))


def _scope(raw: object) -> str:
    if raw is None:
        return ""
    return _str(_object(raw, _SCOPE).get("name", ""))


def _exception_type(events: object) -> str | None:
    """As `spans._exception_type`: the first exception event's `exception.type`."""
    for ev in _list(events):
        ev = _object(ev, _EVENT)
        if ev.get("name") == "exception":
            for kv in _list(ev.get("attributes")):
                kv = _object(kv, _KEY_VALUE)
                if kv.get("key") == "exception.type":
                    value = kv.get("value", {})
                    text = value.get("stringValue", "") if type(value) is dict else ""
                    return text if type(text) is str and text else None
            return None
    return None
