"""OTLP/HTTP answers as the spec asks, against a real server on a socket: 200 with
partial_success, 400, 401, 413 (also after decompression), 415, 503 + Retry-After,
/v1/metrics and /v1/logs; hostile bodies leave nothing stored and the server alive."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from _otlp import chat_span, load_fixture, request, span
from _server import scrape, serve_app
from ai_usage_exporter.core.events.model import Limits
from ai_usage_exporter.recorder import Recorder
from ai_usage_exporter.server.app import create_app

TOKEN = "w-token"
PB = {"content-type": "application/x-protobuf", "authorization": f"Bearer {TOKEN}"}
JS = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(str(tmp_path / "l.db"), limits=Limits(max_body_bytes=1 << 20))
    app = create_app(recorder, write_tokens=[TOKEN])
    with serve_app(app) as url:
        yield url, recorder
    recorder.close()


def stored(recorder: Recorder) -> int:
    recorder.flush(5)
    return int(recorder.view()["totals"]["requests"])


def alive(url: str) -> None:
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_json_with_charset_and_gzip_is_counted_and_answered_in_json(
    server: tuple[str, Recorder],
) -> None:
    url, recorder = server
    body = gzip.compress(load_fixture("pydantic_ai_agent.json"))
    headers = {**JS, "content-type": "application/json; charset=utf-8", "content-encoding": "gzip"}
    r = httpx.post(f"{url}/v1/traces", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {}
    assert stored(recorder) == 2
    by_agent = recorder.view()["by_agent"]
    assert [(a["agent"], a["requests"]) for a in by_agent] == [("my_agent", 2)]


def test_deflate_protobuf_and_partial_success_names_the_span(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    bad = chat_span(attrs={"gen_ai.usage.output_tokens": "lots"})
    req = request([chat_span(input_tokens=3, output_tokens=1), bad])
    body = zlib.compress(req.SerializeToString())
    r = httpx.post(f"{url}/v1/traces", content=body, headers={**PB, "content-encoding": "deflate"})
    assert r.status_code == 200
    reply = ExportTraceServiceResponse.FromString(r.content)
    assert reply.partial_success.rejected_spans == 1
    assert bad.span_id.hex() in reply.partial_success.error_message
    assert "gen_ai.usage.output_tokens must be a token count, got 'lots'" in (
        reply.partial_success.error_message
    )
    assert stored(recorder) == 1


def test_an_event_the_ledger_refuses_is_a_rejected_span(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    old = chat_span(start=1_000_000.0)  # 1970: past the ledger's age limit
    r = httpx.post(
        f"{url}/v1/traces", content=request([old, chat_span()]).SerializeToString(), headers=PB
    )
    reply = ExportTraceServiceResponse.FromString(r.content)
    assert r.status_code == 200 and reply.partial_success.rejected_spans == 1
    assert "timestamp" in reply.partial_success.error_message
    assert stored(recorder) == 1


def test_no_token_is_401(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    body = request([chat_span()]).SerializeToString()
    r = httpx.post(f"{url}/v1/traces", content=body, headers={"content-type": PB["content-type"]})
    assert r.status_code == 401
    assert stored(recorder) == 0


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\xff\xfe garbage \x00", PB, 400),
        (request([chat_span()]).SerializeToString()[:-7], PB, 400),
        (b"{not json", JS, 400),
        (b"[1, 2]", JS, 400),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', JS, 400),
        (b"[" * 100_000 + b"]" * 100_000, JS, 400),
        (b"x", {**PB, "content-type": "text/plain"}, 415),
        (b"x", {**PB, "content-encoding": "br"}, 415),
        (gzip.compress(b"\0" * (2 << 20)), {**PB, "content-encoding": "gzip"}, 413),
        (b"\0" * ((1 << 20) + 1), PB, 413),
        (gzip.compress(b"abc")[:-4], {**PB, "content-encoding": "gzip"}, 400),
    ],
    ids=["garbage", "truncated", "bad-json", "json-array", "bad-hex-id", "deep-json",
         "wrong-type", "unknown-encoding", "gzip-bomb", "too-large", "truncated-gzip"],
)  # fmt: skip
def test_hostile_bodies_are_4xx_store_nothing_and_the_server_lives(
    server: tuple[str, Recorder], body: bytes, headers: dict[str, str], status: int
) -> None:
    url, recorder = server
    r = httpx.post(f"{url}/v1/traces", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert stored(recorder) == 0
    alive(url)


def test_deep_values_and_ten_thousand_attributes_are_harmless(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    deep: Any = "leaf"
    for _ in range(40):  # about as deep as protobuf's own limit of 100 messages lets it be
        deep = [deep]
    many = {f"attr.{i}": i for i in range(10_000)}
    spans = [
        chat_span(attrs={"gen_ai.prompt": deep}),
        chat_span(attrs=many),
        span("noise", many),
    ]
    r = httpx.post(f"{url}/v1/traces", content=request(spans).SerializeToString(), headers=PB)
    assert r.status_code == 200
    assert stored(recorder) == 2
    alive(url)


def test_huge_span_counts_are_answered_without_storing_a_part(tmp_path: Path) -> None:
    recorder = Recorder(str(tmp_path / "l.db"), limits=Limits(max_events_per_request=100))
    app = create_app(recorder)
    with serve_app(app) as url:
        calls = [chat_span() for _ in range(101)]
        noise = [span("GET /", {"http.route": "/"}) for _ in range(20_000)]
        r = httpx.post(
            f"{url}/v1/traces",
            content=request([*noise, *calls]).SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
        )
        assert r.status_code == 413
        assert "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in r.text or r.content
        assert stored(recorder) == 0
        alive(url)
    recorder.close()


def test_ledger_down_is_503_with_retry_after_and_then_counts(tmp_path: Path) -> None:
    recorder = Recorder(str(tmp_path / "l.db"))
    app = create_app(recorder)
    body = request([chat_span(input_tokens=9, output_tokens=2)]).SerializeToString()
    headers = {"content-type": "application/x-protobuf"}
    with serve_app(app) as url:
        recorder.ledger.close()  # every write fails until it is reopened
        r = httpx.post(f"{url}/v1/traces", content=body, headers=headers)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
    recorder.close()
    again = Recorder(str(tmp_path / "l.db"))
    app = create_app(again)
    with serve_app(app) as url:
        assert httpx.post(f"{url}/v1/traces", content=body, headers=headers).status_code == 200
    assert stored(again) == 1
    again.close()


def test_metrics_and_logs_answer_in_otlp_terms(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hi"
    r = httpx.post(f"{url}/v1/logs", content=logs.SerializeToString(), headers=PB)
    assert r.status_code == 200
    reply = orjson.loads(
        httpx.post(f"{url}/v1/logs", content=json_format.MessageToJson(logs), headers=JS).content
    )
    assert reply["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "GenAI spans only" in reply["partialSuccess"]["errorMessage"]
    r = httpx.post(f"{url}/v1/metrics", content=b"{}", headers=JS)
    assert r.status_code == 200 and "errorMessage" in r.json()["partialSuccess"]
    assert stored(recorder) == 0


def test_the_json_view_shows_senders_cost_beside_ours(server: tuple[str, Recorder]) -> None:
    url, recorder = server
    body = load_fixture("openlit_anthropic.json")
    r = httpx.post(f"{url}/v1/traces", content=body, headers=JS)
    assert r.status_code == 200
    recorder.flush(5)
    view = httpx.get(f"{url}/api/metrics").json()
    ours = view["totals"]["cost_usd"]["total"]
    assert ours > 0
    costs = view["sender_costs"]
    assert (costs["events"], costs["sender_usd"], costs["ours_usd"]) == (1, 0.0467, round(ours, 9))
    assert costs["difference_usd"] == round(0.0467 - ours, 9)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sender_costs_read_the_same_from_both_ledgers(tmp_path: Path, backend: str) -> None:
    import asyncio
    import contextlib

    from _pg import fresh_schema
    from ai_usage_exporter.otlp.receiver import OtlpReceiver

    with contextlib.ExitStack() as stack:
        db = str(tmp_path / "l.db") if backend == "sqlite" else stack.enter_context(fresh_schema())
        recorder = Recorder(db)
        stack.callback(recorder.close)
        body = load_fixture("pydantic_ai_agent.json")
        from ai_usage_exporter.otlp import decode

        result = asyncio.run(OtlpReceiver(recorder).export(decode.trace_body(body, decode.JSON)))
        assert result.rejected == 0
        n, theirs, ours = recorder.ledger.sender_costs(0.0)
        assert (n, round(theirs, 9)) == (2, round(0.0001675 + 0.0002, 9))
        assert ours == pytest.approx(recorder.view()["totals"]["cost_usd"]["total"])


def test_a_call_without_usage_is_stored_as_unknown_not_as_priced(
    server: tuple[str, Recorder],
) -> None:
    url, recorder = server
    r = httpx.post(f"{url}/v1/traces", content=load_fixture("no_usage_error.json"), headers=JS)
    assert r.status_code == 200
    recorder.flush(5)
    (row,) = recorder.ledger.events()
    assert (row["level"], row["status"], row["error_type"]) == ("warn", "error", "RateLimitError")
    assert (row["cost_source"], row["cost_total"], row["input_tokens"]) == ("usage-unknown", 0.0, 0)
    assert "no token counts" in orjson.loads(row["metadata"])["usage_unknown"]
    assert recorder.view()["by_level"]["warn"] == 1


def test_a_call_whose_spans_arrive_in_two_exports_is_stored_once(
    server: tuple[str, Recorder],
) -> None:
    url, recorder = server
    inner = chat_span(input_tokens=40, output_tokens=4, span_id="00000000000000f2",
                      parent="00000000000000f1")  # fmt: skip
    outer = chat_span(input_tokens=40, output_tokens=4, span_id="00000000000000f1")
    for s in (inner, outer):
        r = httpx.post(f"{url}/v1/traces", content=request([s]).SerializeToString(), headers=PB)
        assert r.status_code == 200 and r.content == b""
    assert stored(recorder) == 1
    samples = scrape(url)
    for outcome, n in (("counted", 1), ("merged", 1), ("duplicate", 0)):
        assert samples[("ai_exporter_otlp_spans_total", frozenset({("outcome", outcome)}))] == n
