"""OTLP/JSON read straight from the parsed object gives the Batch protobuf's route gives.

The route it replaces, `json_format.ParseDict` into the real message and `spans.collect`
of its bytes, is the oracle: every recorded fixture, generated exports of every value
kind and the shapes the fast path hands back (snake_case names, nulls, floats for
integers) must come out the same, and bad bodies must still be a 400 naming the fault.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from _otlp import FIXTURES, any_value, chat_span, load_fixture, otlp_json, request, span
from ai_usage_exporter.otlp import decode
from ai_usage_exporter.otlp.jsonspans import NotPlain, collect_json
from ai_usage_exporter.otlp.spans import Batch, collect


def oracle(body: bytes) -> Batch:
    """The Batch protobuf's JSON mapping gives: ParseDict, then `collect` of the bytes."""
    return collect(decode.trace_body(body, decode.JSON))


def same(a: Batch, b: Batch) -> None:
    assert (a.total, a.not_genai, a.parents, a.undecodable) == (
        b.total,
        b.not_genai,
        b.parents,
        b.undecodable,
    )
    assert a.spans == b.spans


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_recorded_fixture_reads_the_same_by_the_fast_path(name: str) -> None:
    body = load_fixture(name, now=1.8e9)
    fast = collect_json(orjson.loads(body))  # raises NotPlain if it would fall back
    assert fast.spans, "each fixture holds GenAI spans"
    same(fast, oracle(body))


def test_a_mixed_export_with_errors_exceptions_and_resource_values() -> None:
    call = chat_span(error=True, attrs={"error.type": "RateLimitError"})
    event = call.events.add(name="exception")
    event.attributes.append(KeyValue(key="exception.type", value=any_value("openai.APIError")))
    quiet = chat_span(error=True)
    quiet.events.add(name="exception").attributes.append(
        KeyValue(key="exception.message", value=any_value("no type"))
    )
    child = chat_span(parent=call.span_id.hex())
    noise = span("GET /", {"http.route": "/", "http.response.status_code": 200})
    req = request([noise, call, quiet, child, span("SELECT", {})])
    req.resource_spans[0].resource.attributes.append(
        KeyValue(key="deploy", value=any_value({"region": "eu", "zones": [1, 2], "on": True}))
    )
    body = otlp_json(req)
    fast = collect_json(orjson.loads(body))
    same(fast, oracle(body))
    assert (fast.total, fast.not_genai, len(fast.spans)) == (5, 2, 3)
    assert [s.exception_type for s in fast.spans] == ["openai.APIError", None, None]
    assert fast.spans[0].resource["deploy"] == {"region": "eu", "zones": [1, 2], "on": True}


# Attribute values of every AnyValue kind, nested past the depth `spans.value` keeps.
_scalars = (
    st.text(max_size=12)
    | st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "gen_ai.usage.input_tokens",
        "gen_ai.request.model",
        "llm.token_count.prompt",
        "ai.usage.promptTokens",
        "traceloop.span.kind",
        "http.route",
        "db.system",
        "user.id",
        "",
    ]
) | st.text(max_size=10)


@st.composite
def _exports(draw: st.DrawFn) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rs = req.resource_spans.add()
        for k, v in draw(st.dictionaries(_keys, _values, max_size=3)).items():
            rs.resource.attributes.append(KeyValue(key=k, value=any_value(v)))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(st.sampled_from(["", "openlit", "ai", "opentelemetry.x"]))
            for _ in range(draw(st.integers(0, 4))):
                s = ss.spans.add(
                    trace_id=draw(st.binary(min_size=16, max_size=16)),
                    span_id=draw(st.binary(min_size=8, max_size=8)),
                    parent_span_id=draw(st.sampled_from([b"", b"\x01" * 8])),
                    name=draw(st.text(max_size=8)),
                    kind=draw(st.sampled_from([0, 1, 3])),
                    start_time_unix_nano=draw(st.integers(0, (1 << 64) - 1)),
                    end_time_unix_nano=draw(st.integers(0, (1 << 64) - 1)),
                )
                attrs = draw(st.lists(st.tuples(_keys, _values), max_size=5))
                for k, v in attrs:  # repeated keys too: the last one stands
                    s.attributes.append(KeyValue(key=k, value=any_value(v)))
                if draw(st.booleans()):
                    s.attributes.add(key="gen_ai.raw").value.bytes_value = draw(st.binary())
                if draw(st.booleans()):
                    s.attributes.add(key="gen_ai.empty")  # an AnyValue with nothing set
                code = draw(
                    st.sampled_from(
                        [Status.STATUS_CODE_UNSET, Status.STATUS_CODE_OK, Status.STATUS_CODE_ERROR]
                    )
                )
                if code != Status.STATUS_CODE_UNSET:
                    s.status.CopyFrom(Status(code=code, message=draw(st.text(max_size=5))))
                if draw(st.booleans()):
                    ev = s.events.add(name=draw(st.sampled_from(["exception", "log"])))
                    ev.attributes.add(key="exception.type").value.string_value = draw(
                        st.text(max_size=5)
                    )
    return req


@settings(max_examples=150, deadline=None)
@given(_exports())
def test_generated_exports_read_the_same_both_ways(req: ExportTraceServiceRequest) -> None:
    body = otlp_json(req)
    same(collect_json(orjson.loads(body)), oracle(body))
    same(decode.trace_batch(body, decode.JSON), oracle(body))


def _plain() -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(
        otlp_json(request([chat_span(input_tokens=7, output_tokens=3)]))
    )
    return value


def _first_span(value: dict[str, Any]) -> dict[str, Any]:
    span_: dict[str, Any] = value["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    return span_


def _snake_case(value: dict[str, Any]) -> None:
    value["resource_spans"] = value.pop("resourceSpans")


def _null_value(value: dict[str, Any]) -> None:
    _first_span(value)["attributes"].append({"key": "gen_ai.x", "value": None})


def _float_count(value: dict[str, Any]) -> None:
    for kv in _first_span(value)["attributes"]:
        if kv["key"] == "gen_ai.usage.input_tokens":
            kv["value"] = {"intValue": 7.0}


def _unknown_field(value: dict[str, Any]) -> None:
    _first_span(value)["futureField"] = 1


def _number_times(value: dict[str, Any]) -> None:
    s = _first_span(value)
    s["startTimeUnixNano"] = float(s["startTimeUnixNano"])


@pytest.mark.parametrize(
    "change", [_snake_case, _null_value, _float_count, _unknown_field, _number_times]
)
def test_shapes_outside_plain_otlp_json_take_the_full_parse(change: Any) -> None:
    value = _plain()
    change(value)
    body = bytes(orjson.dumps(value))
    with pytest.raises(NotPlain):
        collect_json(orjson.loads(body))
    batch = decode.trace_batch(body, decode.JSON)
    same(batch, oracle(body))
    assert len(batch.spans) == 1


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "not hex"),
        (b'{"resourceSpans": "all of them"}', "OTLP/JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [7]}]}]}', "OTLP/JSON"),
        (b"[]", "JSON object"),
        (b"{", "not valid JSON"),
    ],
)
def test_bodies_neither_route_reads_are_a_400_naming_the_fault(body: bytes, fault: str) -> None:
    with pytest.raises(decode.DecodeError) as caught:
        decode.trace_batch(body, decode.JSON)
    assert caught.value.status == 400 and fault in caught.value.message


def test_a_protobuf_body_still_goes_through_collect(tmp_path: Path) -> None:
    req = request([chat_span(), span("GET /", {"http.route": "/"})])
    body = req.SerializeToString()
    same(decode.trace_batch(body, decode.PROTOBUF), collect(body))
    with pytest.raises(decode.DecodeError) as caught:
        decode.trace_batch(b"\xff\xfe garbage", decode.PROTOBUF)
    assert caught.value.status == 400


def test_infinite_doubles_and_negative_ints_as_otlp_json_writes_them() -> None:
    s = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="chat")
    for key, v in (
        ("gen_ai.a", math.inf),
        ("gen_ai.b", -math.inf),
        ("gen_ai.c", -(1 << 63)),
        ("gen_ai.d", 1.5),
    ):
        s.attributes.append(KeyValue(key=key, value=any_value(v)))
    body = otlp_json(request([s]))
    assert b'"Infinity"' in body and b'"-9223372036854775808"' in body
    fast = collect_json(orjson.loads(body))
    same(fast, oracle(body))
    assert fast.spans[0].attrs == {
        "gen_ai.a": math.inf,
        "gen_ai.b": -math.inf,
        "gen_ai.c": -(1 << 63),
        "gen_ai.d": 1.5,
    }


def test_values_deeper_than_eight_levels_are_cut_as_protobuf_reading_cuts_them() -> None:
    deep: Any = "leaf"
    for _ in range(6):  # twelve levels of AnyValue, within ParseDict's nesting limit
        deep = [{"k": deep}]
    body = otlp_json(request([chat_span(attrs={"gen_ai.prompt": deep})]))
    fast = collect_json(orjson.loads(body))
    same(fast, oracle(body))
    cut = fast.spans[0].attrs["gen_ai.prompt"]
    for _ in range(4):  # a list and a map: two levels a round
        cut = cut[0]["k"]
    assert cut is None


def test_the_node_exporters_json_takes_the_direct_path() -> None:
    body = (
        Path(__file__).parent / "fixtures" / "otlp_json" / "node_exporter_http.json"
    ).read_bytes()
    fast = collect_json(orjson.loads(body))
    same(fast, oracle(body))
    assert (fast.total, len(fast.spans)) == (4, 4)


def test_thousands_of_digits_are_no_count_and_no_crash() -> None:
    value = _plain()
    span_ = _first_span(value)
    span_["attributes"].append(
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "9" * 5000}}
    )
    with pytest.raises(NotPlain):
        collect_json(value)
    value = _plain()
    _first_span(value)["startTimeUnixNano"] = "1" * 5000
    with pytest.raises(NotPlain):
        collect_json(value)
    body = bytes(orjson.dumps(value))
    with pytest.raises(decode.DecodeError) as caught:  # the full parse refuses it, naming it
        decode.trace_batch(body, decode.JSON)
    assert caught.value.status == 400


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["gen_ai.usage.input_tokens", "gen_ai.operation.name", "chat", "ab"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(
            ["resourceSpans", "scopeSpans", "spans", "attributes", "key", "value",
             "stringValue", "intValue", "arrayValue", "kvlistValue", "values", "traceId",
             "spanId", "status", "code", "events", "name", "startTimeUnixNano", "resource"]
        ) | st.text(max_size=5),
        inner,
        max_size=4,
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_body_is_a_batch_or_a_400_never_another_error(value: Any) -> None:
    shaped = {"resourceSpans": [{"scopeSpans": [{"spans": [value]}]}]}
    for candidate in (value, shaped):
        body = bytes(orjson.dumps(candidate))
        try:
            decode.trace_batch(body, decode.JSON)
        except decode.DecodeError as exc:
            assert exc.status == 400
