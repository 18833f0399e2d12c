from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ai_usage_exporter.core.events.model import EventError, UsageEvent
from ai_usage_exporter.core.events.parse import parse_event, parse_events
from ai_usage_exporter.core.events.usage import normalise_usage
from ai_usage_exporter.core.shapes import USAGE_FIELDS, usage_shape

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "provider_usage.json"
LOCAL_FIXTURES = Path(__file__).parent / "fixtures" / "provider_usage.json"
NOW = 1_790_000_000.0  # 2026-09-21


def _fixture_cases() -> list[dict[str, Any]]:
    path = LOCAL_FIXTURES if LOCAL_FIXTURES.exists() else FIXTURES
    cases: list[dict[str, Any]] = json.loads(path.read_text())["cases"]
    return cases


def _event_from_case(case: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {"provider": case["provider"], "model": case["model"]}
    if "usage" in case:
        event["usage"] = case["usage"]
    elif "usageMetadata" in case:
        event["usageMetadata"] = case["usageMetadata"]
    elif "response" in case:
        event["response"] = case["response"]
    elif "chunk" in case:
        event["response"] = case["chunk"]
    if "operation" in case:
        event["operation"] = case["operation"]
    return event


@pytest.mark.parametrize("case", _fixture_cases(), ids=lambda c: c["name"])
def test_provider_fixture_normalises_to_the_documented_counts(case: dict[str, Any]) -> None:
    (event,) = parse_event(_event_from_case(case), now=NOW)
    # Kinds a case does not name are none of that kind.
    expected = {**dict.fromkeys(USAGE_FIELDS, 0), **case["normalised"]}
    assert {f: getattr(event, f) for f in USAGE_FIELDS} == expected
    if "duration_ms" in case:
        assert event.duration_ms == pytest.approx(case["duration_ms"], abs=1e-9)


def test_anthropic_input_adds_both_cache_counts() -> None:
    counts = normalise_usage(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 200,
            "cache_creation_input_tokens": 30,
            "output_tokens": 7,
        }
    )
    assert counts["input_tokens"] == 240
    assert counts["cached_input_tokens"] == 200
    assert counts["cache_write_tokens"] == 30
    assert counts["output_tokens"] == 7


def test_responses_and_anthropic_shapes_without_cache_fields_agree() -> None:
    usage = {"input_tokens": 10, "output_tokens": 5}
    assert usage_shape(usage) == "openai_responses"
    assert normalise_usage(usage)["input_tokens"] == 10


def test_gemini_tool_use_prompt_and_audio_modalities() -> None:
    counts = normalise_usage(
        {
            "promptTokenCount": 100,
            "toolUsePromptTokenCount": 20,
            "candidatesTokenCount": 50,
            "promptTokensDetails": [
                {"modality": "AUDIO", "tokenCount": 60},
                {"modality": "TEXT", "tokenCount": 40},
            ],
            "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 10}],
        }
    )
    assert counts == {
        **dict.fromkeys(USAGE_FIELDS, 0),
        "input_tokens": 120,
        "output_tokens": 50,
        "audio_input_tokens": 60,
        "audio_output_tokens": 10,
    }


def test_defaults_and_aliases() -> None:
    (e,) = parse_event(
        {"provider": "openai", "model": "m", "prompt_tokens": 3, "completion_tokens": 4}, now=NOW
    )
    assert (e.input_tokens, e.output_tokens) == (3, 4)
    assert (e.operation, e.service, e.status, e.level) == ("chat", "default", "ok", "info")
    assert e.timestamp == NOW
    assert e.duration_ms is None


def test_error_status_defaults_level_to_error_but_explicit_level_wins() -> None:
    (e,) = parse_event({"provider": "p", "model": "m", "status": "error"}, now=NOW)
    assert e.level == "error"
    (e,) = parse_event({"provider": "p", "model": "m", "status": "error", "level": "warn"}, now=NOW)
    assert e.level == "warn"


def test_timestamp_rfc3339_and_epoch() -> None:
    (e,) = parse_event(
        {"provider": "p", "model": "m", "timestamp": "2026-09-21T10:00:00Z"}, now=NOW
    )
    assert e.timestamp == 1_789_984_800.0
    assert e.timestamp_rfc3339() == "2026-09-21T10:00:00.000000Z"
    (e,) = parse_event({"provider": "p", "model": "m", "timestamp": 1_789_984_800}, now=NOW)
    assert e.timestamp == 1_789_984_800.0


def _details(items: list[Any]) -> list[dict[str, Any]]:
    with pytest.raises(EventError) as info:
        parse_events(items, now=NOW)
    return [d.as_dict() for d in info.value.details]


def test_unknown_field_is_named() -> None:
    assert _details([{"provider": "p", "model": "m", "prompt_token": 5}]) == [
        {
            "index": 0,
            "field": "prompt_token",
            "message": "unknown field 'prompt_token'; did you mean 'prompt_tokens'?",
        }
    ]
    # No near miss: the event table is where the fields are.
    assert _details([{"provider": "p", "model": "m", "zzz": 1, "modle": "x"}]) == [
        {
            "index": 0,
            "field": "zzz",
            "message": "unknown fields 'zzz', 'modle' (did you mean 'model'?); "
            "see the event table in the README",
        }
    ]


def test_every_problem_of_every_event_is_reported() -> None:
    details = _details(
        [
            {"provider": "p", "model": "m"},
            {"model": "m", "input_tokens": -1},
            {"provider": "p", "model": "m", "status": "failed", "duration_ms": "3"},
        ]
    )
    assert details == [
        {"index": 1, "field": "provider", "message": "is required"},
        {"index": 1, "field": "input_tokens", "message": "must be >= 0, got -1"},
        {"index": 2, "field": "duration_ms", "message": 'must be a number, got "3"'},
        {"index": 2, "field": "status", "message": 'must be one of ok, error; got "failed"'},
    ]


@pytest.mark.parametrize(
    ("event", "field", "fragment"),
    [
        ({"input_tokens": True}, "input_tokens", "non-negative integer, got true"),
        ({"input_tokens": 1.5}, "input_tokens", "non-negative integer"),
        ({"input_tokens": 2.0}, "input_tokens", "whole number without a decimal point"),
        ({"input_tokens": 10**12}, "input_tokens", "must be <= 100000000"),
        ({"duration_ms": -1}, "duration_ms", "must be >= 0"),
        ({"duration_ms": float("nan")}, "duration_ms", "must be finite"),
        ({"cost_usd": float("inf")}, "cost_usd", "must be finite"),
        ({"timestamp": "yesterday"}, "timestamp", "RFC 3339"),
        ({"timestamp": "2026-09-21T10:00:00"}, "timestamp", "needs a UTC offset"),
        ({"timestamp": "2020-01-01T00:00:00Z"}, "timestamp", "days in the past"),
        ({"timestamp": "2030-01-01T00:00:00Z"}, "timestamp", "in the future"),
        ({"metadata": [1, 2]}, "metadata", "must be a JSON object"),
        ({"metadata": {"x": "y" * 20000}}, "metadata", "the limit is 16384"),
        ({"service": "a\nb"}, "service", "control characters"),
        ({"service": "x" * 257}, "service", "the limit is 256"),
        ({"service": "\ud800"}, "service", "lone surrogate"),
        ({"level": "fatal"}, "level", "must be one of debug, info, warn, error"),
        ({"input_tokens": 5, "cached_input_tokens": 6}, "cached_input_tokens", "must include them"),
        (
            {"output_tokens": 5, "reasoning_tokens": 6},
            "reasoning_tokens",
            "which must include them",
        ),
        ({"prompt_tokens": 1, "input_tokens": 1}, "prompt_tokens", "alias of input_tokens"),
        ({"total_tokens": 10}, "total_tokens", "cannot be split"),
        ({"usage": {"prompt_tokens": 1}, "input_tokens": 1}, "input_tokens", "not both"),
        ({"usage": {"foo": 1}}, "usage", "no token counts in a known provider shape"),
        ({"usage": "x"}, "usage", "must be a JSON object"),
        ({"usage": {"prompt_tokens": -3}}, "usage.prompt_tokens", "must be >= 0"),
    ],
)
def test_invalid_fields(event: dict[str, Any], field: str, fragment: str) -> None:
    (detail,) = _details([{"provider": "p", "model": "m", **event}])
    assert detail["field"] == field
    assert fragment in detail["message"]


def test_too_many_events() -> None:
    with pytest.raises(EventError) as info:
        parse_events([{"provider": "p", "model": "m"}] * 10_001, now=NOW)
    assert info.value.details[0].message == "10001 events in one request; the limit is 10000"


def test_emoji_and_quotes_are_accepted() -> None:
    (e,) = parse_event({"provider": "p", "model": 'ünï "cödé" 🤖\\', "agent": "👩‍🔬"}, now=NOW)
    assert e.model == 'ünï "cödé" 🤖\\'
    assert e.agent == "👩‍🔬"


def test_query_summary_becomes_one_event_per_inference() -> None:
    summary = {
        "event": "token_usage_summary",
        "query_id": "q-42",
        "whatsapp": "+15550001",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "service": "bot",
        "idempotency_key": "q-42",
        "total_prompt_tokens": 30,
        "total_completion_tokens": 12,
        "total_tokens": 42,
        "inferences": [
            {
                "node_name": "classify",
                "inference_type": "classification",
                "prompt_tokens": 10,
                "completion_tokens": 2,
                "total_tokens": 12,
                "timestamp": "2026-09-21T10:00:00",
            },
            {
                "node_name": "answer",
                "inference_type": "chat",
                "prompt_tokens": 20,
                "completion_tokens": 10,
                "total_tokens": 30,
                "timestamp": "2026-09-21T10:00:01Z",
                "model": "gpt-4o",
            },
        ],
    }
    a, b = parse_event(summary, now=NOW)
    assert (a.node, a.operation, a.input_tokens, a.output_tokens, a.model) == (
        "classify",
        "classification",
        10,
        2,
        "gpt-4o-mini",
    )
    assert (b.node, b.operation, b.input_tokens, b.output_tokens, b.model) == (
        "answer",
        "chat",
        20,
        10,
        "gpt-4o",
    )
    assert a.user == b.user == "+15550001"
    assert a.query_id == b.query_id == "q-42"
    assert (a.idempotency_key, b.idempotency_key) == ("q-42#0", "q-42#1")
    assert a.service == "bot"
    assert a.timestamp == 1_789_984_800.0  # no offset in a summary reads as UTC


def test_query_summary_errors_point_into_the_inference() -> None:
    details = _details(
        [
            {
                "event": "token_usage_summary",
                "provider": "openai",
                "model": "m",
                "inferences": [{"node_name": "a", "prompt_tokens": -1}, {"nodename": "b"}],
            }
        ]
    )
    assert details == [
        {"index": 0, "field": "inferences[0].prompt_tokens", "message": "must be >= 0, got -1"},
        {
            "index": 0,
            "field": "inferences[1].nodename",
            "message": "unknown field 'nodename'; did you mean 'node_name'?",
        },
    ]


def test_response_body_supplies_model_and_usage() -> None:
    (e,) = parse_event(
        {
            "provider": "openai",
            "response": {
                "model": "gpt-4o-2024-08-06",
                "usage": {"prompt_tokens": 5, "completion_tokens": 6},
            },
        },
        now=NOW,
    )
    assert (e.model, e.input_tokens, e.output_tokens) == ("gpt-4o-2024-08-06", 5, 6)


def test_usage_event_total() -> None:
    assert UsageEvent(provider="p", model="m", input_tokens=3, output_tokens=4).total_tokens == 7
