"""The GenAI mapping on recorded spans of every family (tests/fixtures/otlp/SOURCES.md):
exact events, agent and workflow spans lending attribution but never a count, split
spans counted once, cache tokens mapped to our convention; and the unit rules."""

from __future__ import annotations

from typing import Any

import pytest

from _otlp import chat_span, load_fixture, request, span
from ai_usage_exporter.otlp import decode
from ai_usage_exporter.otlp.genai import BadSpan, Recent, count, map_batch
from ai_usage_exporter.otlp.spans import collect

COUNTS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")


def mapped(name: str) -> Any:
    body = load_fixture(name)
    return map_batch(collect(decode.trace_body(body, decode.JSON)))


def short(e: dict[str, Any]) -> dict[str, Any]:
    keep = ("provider", "model", "agent", "workflow_id", "session_id", "level", *COUNTS)
    return {k: e[k] for k in keep if e.get(k)}


# fixture -> (events as (provider, model, counts, attribution), outcomes)
EXPECTED: dict[str, tuple[list[dict[str, Any]], dict[str, int]]] = {
    "pydantic_ai_agent.json": (
        [
            {"provider": "openai", "model": "gpt-4o-2024-08-06", "agent": "my_agent",
             "input_tokens": 51, "output_tokens": 4},
            {"provider": "openai", "model": "gpt-4o-2024-08-06", "agent": "my_agent",
             "input_tokens": 52, "output_tokens": 8, "cached_input_tokens": 32},
        ],
        {"aggregate": 1, "not_inference": 1},
    ),
    "vercel_ai_v4_anthropic.json": (
        [{"provider": "anthropic", "model": "claude-3-5-sonnet-20241022", "workflow_id": "my-fn",
          "input_tokens": 12 + 10426, "output_tokens": 48, "cached_input_tokens": 10426}],
        {"aggregate": 1},
    ),
    "vercel_ai_v5_anthropic_stream.json": (
        [{"provider": "anthropic", "model": "claude-sonnet-4-5",
          "input_tokens": 8 + 10426, "output_tokens": 501, "cache_write_tokens": 10426}],
        {"aggregate": 1},
    ),
    "vercel_ai_v7_openai.json": (
        [{"provider": "openai", "model": "gpt-4o-mini",
          "input_tokens": 2006, "output_tokens": 300, "cached_input_tokens": 1920}],
        {"aggregate": 1},
    ),
    "openinference_anthropic.json": (
        [{"provider": "anthropic", "model": "claude-sonnet-4-5", "agent": "support_agent",
          "session_id": "s-9", "input_tokens": 10438, "output_tokens": 48, "cached_input_tokens": 10426}],
        {"aggregate": 1},
    ),
    "openlit_anthropic.json": (
        [{"provider": "anthropic", "model": "claude-sonnet-4-5",
          "input_tokens": 8 + 10426, "output_tokens": 501, "cache_write_tokens": 10426}],
        {},
    ),
    "openllmetry_workflow.json": (
        [{"provider": "openai", "model": "gpt-3.5-turbo-0125", "workflow_id": "joke_generator",
          "input_tokens": 15, "output_tokens": 18}],
        {"aggregate": 2},
    ),
    "google_adk_agent.json": (
        [
            {"provider": "google", "model": "gemini-2.0-flash", "agent": "hello_agent",
             "input_tokens": 28, "output_tokens": 3},
            {"provider": "google", "model": "gemini-2.0-flash", "agent": "hello_agent",
             "input_tokens": 39, "output_tokens": 6},
        ],
        {"aggregate": 2, "not_inference": 1},
    ),
    "agent_framework_workflow.json": (
        [
            {"provider": "openai", "model": "gpt-4o-mini-2024-07-18", "agent": "WeatherAgent",
             "session_id": "thread_9f8e7d", "input_tokens": 74, "output_tokens": 17},
            {"provider": "openai", "model": "gpt-4o-mini-2024-07-18", "agent": "WeatherAgent",
             "session_id": "thread_9f8e7d", "input_tokens": 112, "output_tokens": 26},
        ],
        # The agent span repeats its last call's response id and carries the run's totals.
        {"aggregate": 1, "not_inference": 1, "not_genai": 2},
    ),
    "strands_bedrock_agent.json": (
        [{"provider": "bedrock", "model": "us.anthropic.claude-sonnet-4-20250514-v1:0",
          "agent": "Strands Agents", "input_tokens": 12 + 900, "output_tokens": 40,
          "cached_input_tokens": 900}],
        # The event-loop cycle span carries only gen_ai.event.* times.
        {"aggregate": 1, "not_inference": 2},
    ),
    "split_stream.json": (
        [{"provider": "openai", "model": "gpt-4o-mini-2024-07-18",
          "input_tokens": 19, "output_tokens": 10}],
        {"merged": 1},
    ),
    "spring_ai_chat.json": (
        [{"provider": "openai", "model": "gpt-4o-2024-08-06",
          "input_tokens": 2006, "output_tokens": 300}],
        {"aggregate": 1},
    ),
    "no_usage_error.json": (
        [{"provider": "openai", "model": "gpt-4o", "level": "warn"}],
        {},
    ),
    "langsmith_runs.json": (
        [
            {"provider": "openai", "model": "gpt-4o-mini-2024-07-18", "session_id": "thread-42",
             "input_tokens": 1200, "output_tokens": 80, "cached_input_tokens": 1024},
            {"provider": "anthropic", "model": "claude-sonnet-4-5",
             "input_tokens": 10438, "output_tokens": 48, "cached_input_tokens": 10426},
            {"provider": "ollama", "model": "llama3.1:8b", "input_tokens": 30, "output_tokens": 12},
        ],
        {"aggregate": 1, "not_inference": 2},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_spans_map_to_exact_events(name: str) -> None:
    events, outcomes = EXPECTED[name]
    m = mapped(name)
    assert [short(e) for e in m.events] == events
    assert {k: v for k, v in m.outcomes.items() if v} == outcomes
    assert m.rejected == []
    for e in m.events:
        trace, sid = e["idempotency_key"].split(":")[1:]
        assert len(trace) == 32 and len(sid) == 16


def test_sender_cost_is_kept_beside_never_as_the_price() -> None:
    (e,) = mapped("openlit_anthropic.json").events
    assert e["metadata"] == {"sender_cost_usd": 0.0467, "otlp_family": "openlit"}
    assert "cost_usd" not in e and "provider_cost_usd" not in e


def test_an_inference_span_without_usage_is_a_call_of_unknown_usage() -> None:
    (e,) = mapped("no_usage_error.json").events
    assert e["status"] == "error" and e["error_type"] == "RateLimitError"
    assert e["level"] == "warn"
    assert "no token counts" in e["metadata"]["usage_unknown"]
    assert not any(k in e for k in COUNTS)


@pytest.mark.parametrize(
    ("raw", "expected"), [(12, 12), ("12", 12), (" 7 ", 7), (3.0, 3), ("0", 0)]
)
def test_counts_arrive_as_ints_strings_or_integral_floats(raw: object, expected: int) -> None:
    assert count("gen_ai.usage.input_tokens", raw) == expected


@pytest.mark.parametrize("raw", [-1, "-1", "1e3", 2.5, True, [], "twelve", float("nan")])
def test_a_count_that_is_no_count_is_refused_naming_the_attribute(raw: object) -> None:
    with pytest.raises(BadSpan, match="gen_ai.usage.input_tokens"):
        count("gen_ai.usage.input_tokens", raw)


def test_a_refused_span_is_named_and_the_rest_of_the_export_counts() -> None:
    req = request(
        [
            chat_span(input_tokens=5, output_tokens=1),
            chat_span(attrs={"gen_ai.usage.input_tokens": "x"}),
        ]
    )
    m = map_batch(collect(req.SerializeToString()))
    assert len(m.events) == 1 and m.outcomes["rejected"] == 1
    assert "gen_ai.usage.input_tokens must be a token count, got 'x'" in m.rejected[0]


def test_provider_from_model_name_then_server_address() -> None:
    spans = [
        span("chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-3-haiku",
                      "gen_ai.usage.input_tokens": 1}),
        span("chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "my-tuned",
                      "server.address": "api.groq.com", "gen_ai.usage.input_tokens": 1}),
        span("chat", {"gen_ai.operation.name": "chat", "gen_ai.system": "az.ai.openai",
                      "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1}),
    ]  # fmt: skip
    assert [
        e["provider"] for e in map_batch(collect(request(spans).SerializeToString())).events
    ] == [
        "anthropic",
        "groq",
        "azure",
    ]


def test_an_agent_span_over_several_calls_counts_none_of_its_totals() -> None:
    agent = span("agent", {"gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 3})
    sid = agent.span_id.hex()
    kids = [chat_span(input_tokens=10 * i, output_tokens=i, parent=sid) for i in (1, 2)]
    m = map_batch(collect(request([*kids, agent]).SerializeToString()))
    assert [(e["input_tokens"], e["output_tokens"]) for e in m.events] == [(10, 1), (20, 2)]
    assert m.outcomes["aggregate"] == 1


def test_non_genai_spans_are_skipped_and_counted() -> None:
    spans = [span("GET /", {"http.method": "GET"}), span("SELECT", {"db.system": "postgresql"})]
    m = map_batch(collect(request([*spans, chat_span()]).SerializeToString()))
    assert len(m.events) == 1 and m.outcomes["not_genai"] == 2


def _langsmith_llm(details: str) -> list[dict[str, Any]]:
    s = span(
        "ChatAnthropic",
        {
            "langsmith.span.kind": "llm",
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.usage.input_token_details": details,
        },
    )
    return map_batch(collect(request([s]).SerializeToString())).events


def test_langsmith_details_as_python_literals_with_the_hour_long_cache_writes() -> None:
    (e,) = _langsmith_llm(
        "{'cache_read': 100, 'cache_creation': 500, 'ephemeral_1h_input_tokens': 200}"
    )
    assert (e["input_tokens"], e["cached_input_tokens"], e["cache_write_tokens"]) == (
        1000, 100, 500)  # fmt: skip
    assert e["cache_write_1h_tokens"] == 200


@pytest.mark.parametrize(
    "details",
    ["{'cache_read': __import__('os').getpid()}", "{" * 3000, "{'cache_read': -5}", "{1: 2,"],
)
def test_langsmith_details_that_are_no_plain_counts_are_ignored(details: str) -> None:
    (e,) = _langsmith_llm(details)
    assert (e["input_tokens"], e["output_tokens"]) == (1000, 10)
    assert "cached_input_tokens" not in e


# ---------------------------------------------------------------- across exports


def _export(recent: Recent, *spans: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    m = map_batch(collect(request(list(spans)).SerializeToString()), recent)
    recent.note(m.remember)  # as the receiver does once the export is committed
    return m.events, {k: v for k, v in m.outcomes.items() if v}


def test_a_wrapper_span_exported_after_its_call_does_not_count_it_again() -> None:
    recent = Recent()
    wrapper = "00000000000000a1"
    inner = chat_span(input_tokens=40, output_tokens=4, span_id="00000000000000a2", parent=wrapper)
    outer = chat_span(input_tokens=40, output_tokens=4, span_id=wrapper)
    first, _ = _export(recent, inner)
    second, outcomes = _export(recent, outer)
    assert [e["input_tokens"] for e in first] == [40] and second == []
    assert outcomes == {"merged": 1}


def test_a_call_exported_after_the_span_around_it_does_not_count_again() -> None:
    recent = Recent()
    outer = chat_span(span_id="00000000000000b1")
    inner = chat_span(span_id="00000000000000b2", parent="00000000000000b1")
    assert len(_export(recent, outer)[0]) == 1
    assert _export(recent, inner) == ([], {"merged": 1})


def test_the_two_spans_of_one_response_in_two_exports_count_once() -> None:
    recent = Recent()
    rid = {"gen_ai.response.id": "chatcmpl-split"}
    assert len(_export(recent, chat_span(attrs=rid))[0]) == 1
    assert _export(recent, chat_span(input_tokens=None, attrs=rid)) == ([], {"merged": 1})


def test_two_calls_under_one_agent_in_two_exports_both_count() -> None:
    recent = Recent()
    agent = span("invoke_agent helper", {"gen_ai.operation.name": "invoke_agent",
                                          "gen_ai.agent.name": "helper"},
                 span_id="00000000000000c1")  # fmt: skip
    one = chat_span(span_id="00000000000000c2", parent="00000000000000c1")
    two = chat_span(span_id="00000000000000c3", parent="00000000000000c1")
    assert len(_export(recent, one)[0]) == 1
    events, outcomes = _export(recent, two, agent)
    assert len(events) == 1 and events[0]["agent"] == "helper"
    assert outcomes == {"aggregate": 1}
    # The same span again (an exporter's retry) is still offered: the ledger's
    # idempotency key makes it a duplicate, not this memory.
    assert len(_export(recent, two)[0]) == 1


def test_recent_calls_are_bounded() -> None:
    recent = Recent(capacity=3)
    for i in range(5):
        _export(recent, chat_span(span_id=f"{0xD0 + i:016x}", parent=f"{0xE0 + i:016x}"))
    assert len(recent.calls) == 3 and len(recent.above) == 3


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("gen_ai.usage.cached_tokens", "cached_input_tokens"),
        ("gen_ai.usage.input_cached_tokens", "cached_input_tokens"),
        ("gen_ai.usage.cached_input_tokens", "cached_input_tokens"),
        ("gen_ai.usage.cache_read_tokens", "cached_input_tokens"),
        ("gen_ai.usage.cache_write_tokens", "cache_write_tokens"),
    ],
)
def test_hand_made_cache_spellings_are_read(name: str, field: str) -> None:
    # As LiveKit Agents writes an OpenAI call: input 100 with 80 of it read from the cache.
    call = chat_span(input_tokens=100, output_tokens=4, attrs={name: 80})
    (event,) = map_batch(collect(request([call]).SerializeToString())).events
    assert (event["input_tokens"], event[field], event["output_tokens"]) == (100, 80, 4)


def test_strands_time_to_first_token_is_read_in_milliseconds() -> None:
    (event,) = mapped("strands_bedrock_agent.json").events
    assert event["ttft_ms"] == 420.0
