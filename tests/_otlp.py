"""Build OTLP trace exports for tests: spans from plain attribute dicts, as protobuf
messages or OTLP/JSON, and the recorded-span fixtures of tests/fixtures/otlp/."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
TRACE_ID = "5b8efff798038103d269b633813fc60c"
_ids = itertools.count(1)


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, list | tuple):
        out = AnyValue()
        out.array_value.values.extend(any_value(x) for x in v)
        return out
    if isinstance(v, Mapping):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(x)) for k, x in v.items())
        return out
    raise TypeError(f"no AnyValue for {v!r}")


def span(
    name: str,
    attrs: Mapping[str, Any],
    *,
    span_id: str | None = None,
    parent: str = "",
    trace_id: str = TRACE_ID,
    start: float | None = None,
    duration: float = 1.5,
    error: bool = False,
) -> Span:
    start_s = time.time() - 10 if start is None else start
    s = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id or f"{next(_ids):016x}"),
        parent_span_id=bytes.fromhex(parent),
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=int(start_s * 1e9),
        end_time_unix_nano=int((start_s + duration) * 1e9),
    )
    s.attributes.extend(KeyValue(key=k, value=any_value(v)) for k, v in attrs.items())
    if error:
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    return s


def chat_span(
    model: str = "gpt-4o-mini",
    provider: str = "openai",
    input_tokens: int | None = 10,
    output_tokens: int | None = 5,
    **kw: Any,
) -> Span:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
    if input_tokens is not None:
        attrs["gen_ai.usage.input_tokens"] = input_tokens
    if output_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = output_tokens
    attrs.update(kw.pop("attrs", {}))
    return span(f"chat {model}", attrs, **kw)


def request(
    spans: Sequence[Span],
    service: str = "app",
    scope: str = "opentelemetry.instrumentation.openai_v2",
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=any_value(service)))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    ss.spans.extend(spans)
    return req


def otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """The request as OTLP/JSON writes it: protobuf's JSON mapping with hex ids."""
    value = json_format.MessageToDict(req)
    for rs in value.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64decode(s[key]).hex()
    return bytes(orjson.dumps(value))


def load_fixture(name: str, now: float | None = None) -> bytes:
    """A recorded-span fixture as OTLP/JSON, its times moved to just before `now`.

    The fixtures keep their recorded times relative to the first span's start; the
    ledger refuses events more than 400 days old, so they are replayed as recent.
    """
    data = orjson.loads((FIXTURES / name).read_bytes())
    base = (time.time() if now is None else now) - 60
    starts = [
        int(s["startTimeUnixNano"])
        for rs in data["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    first = min(starts)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for key in ("startTimeUnixNano", "endTimeUnixNano"):
                    s[key] = str(int(base * 1e9) + int(s[key]) - first)
    return bytes(orjson.dumps(data))
