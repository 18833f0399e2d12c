"""Stream folding: real recorded streams fold to the provider's own usage object.

Every transcript under tests/fixtures/streams/ was recorded from the live provider by
another project (or is the provider's or its official SDK's own example), cited at its
case below. `.sse` files are response bodies exactly as recorded unless the case says
"trimmed": then the first and last three events are kept and the content chunks
between them, which carry no usage, are dropped. Bedrock's ConverseStream body is a
binary AWS event stream; its `.jsonl` files hold the decoded events, one
`{event type: payload}` per line, the shape boto3 yields.

Where no public recording pairs a streamed and a non-streamed run of the same request,
the expected object is what the provider documents as the non-streamed usage: the
totals of the final chunk (OpenAI Chat, Gemini), the `response` inside
`response.completed` (the Responses API returns that same object when not streaming),
the official SDK's accumulated final message (Anthropic).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from ai_usage_exporter.core.events.usage import normalise_usage
from ai_usage_exporter.core.shapes import USAGE_FIELDS
from ai_usage_exporter.core.shapes.sse import SSEParser, parse_sse
from ai_usage_exporter.core.shapes.streams import STREAM_FORMATS, StreamFolder, fold_stream

FIXTURES = Path(__file__).parent / "fixtures" / "streams"
PYDANTIC_AI = "pydantic/pydantic-ai tests/models/cassettes/"


@dataclass(frozen=True)
class Case:
    file: str
    fmt: str
    source: str
    usage: dict[str, Any]
    counts: dict[str, int]
    model: str | None = None
    response_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _counts(**nonzero: int) -> dict[str, int]:
    counts = dict.fromkeys(USAGE_FIELDS, 0)
    counts.update(nonzero)
    return counts


CASES = [
    Case(
        # OpenAI with stream_options.include_usage: a last chunk with `choices: []`.
        "openai_chat_include_usage.sse",
        "openai_chat",
        PYDANTIC_AI + "test_openai/test_run_stream_sync_streams_real_model.yaml (interaction 2)",
        {
            "prompt_tokens": 78,
            "completion_tokens": 9,
            "total_tokens": 87,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        _counts(input_tokens=78, output_tokens=9),
        "gpt-4o-mini-2024-07-18",
        "chatcmpl-Dx0Xq5Xx9rHB2ehcHZCRDsnuymUXc",
    ),
    Case(
        # Groq today: the same usage in `usage` and in `x_groq.usage`, on the finishing chunk.
        "groq_usage_and_x_groq.sse",
        "openai_chat",
        PYDANTIC_AI + "test_groq/test_tool_use_failed_error_streaming.yaml (interaction 2)",
        {
            "queue_time": 0.00491786,
            "prompt_tokens": 304,
            "prompt_time": 0.01460151,
            "completion_tokens": 49,
            "completion_time": 0.11216431,
            "total_tokens": 353,
            "total_time": 0.12676582,
            "completion_tokens_details": {"reasoning_tokens": 23},
        },
        _counts(input_tokens=304, output_tokens=49, reasoning_tokens=23),
        "openai/gpt-oss-120b",
        "chatcmpl-e35442a8-12c0-4fb4-8be4-0e51727ce7b7",
    ),
    Case(
        # Groq before `usage` was added: only `x_groq.usage`. Trimmed (227 events).
        "groq_x_groq_only.sse",
        "openai_chat",
        PYDANTIC_AI + "test_groq/test_groq_model_web_search_tool_stream.yaml",
        {
            "queue_time": 0.235881,
            "prompt_tokens": 5003,
            "prompt_time": 0.330548,
            "completion_tokens": 359,
            "completion_time": 0.87677,
            "total_tokens": 5362,
            "total_time": 1.207319,
        },
        _counts(input_tokens=5003, output_tokens=359),
        "groq/compound",
        "stub",
    ),
    Case(
        # DeepSeek: usage rides on the chunk with finish_reason; cache hits beside the
        # OpenAI fields. Trimmed (212 events).
        "deepseek_usage_on_finish_chunk.sse",
        "openai_chat",
        PYDANTIC_AI + "test_deepseek/test_deepseek_model_thinking_stream.yaml",
        {
            "prompt_tokens": 6,
            "completion_tokens": 212,
            "total_tokens": 218,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 198},
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": 6,
        },
        _counts(input_tokens=6, output_tokens=212, reasoning_tokens=198),
        "deepseek-reasoner",
        "33be18fc-3842-486c-8c29-dd8e578f7f20",
    ),
    Case(
        # Mistral: usage on the finishing chunk, which also carries choices. Trimmed (159).
        "mistral_usage_on_finish_chunk.sse",
        "openai_chat",
        PYDANTIC_AI + "test_mistral/test_mistral_model_thinking_part_iter.yaml",
        {"prompt_tokens": 10, "total_tokens": 242, "completion_tokens": 232},
        _counts(input_tokens=10, output_tokens=232),
        "magistral-medium-latest",
        "9f9d90210f194076abeee223863eaaf0",
    ),
    Case(
        # OpenRouter: the usage chunk after the finish carries one empty choice, the
        # billed cost and a null it reports as null.
        "openrouter_usage_chunk_with_choice.sse",
        "openai_chat",
        PYDANTIC_AI + "test_openrouter/test_openrouter_streaming_reasoning.yaml",
        {
            "prompt_tokens": 43,
            "completion_tokens": 36,
            "total_tokens": 79,
            "cost": 0.000669,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0, "video_tokens": 0},
            "cost_details": {
                "upstream_inference_cost": None,
                "upstream_inference_prompt_cost": 0.000129,
                "upstream_inference_completions_cost": 0.00054,
            },
            "completion_tokens_details": {"reasoning_tokens": 13, "image_tokens": 0},
        },
        _counts(input_tokens=43, output_tokens=36, reasoning_tokens=13),
        "anthropic/claude-sonnet-4.5",
        "gen-1765226419-AGrwjunAftQIAgweibL8",
    ),
    Case(
        # OpenRouter with a server tool: cache_write_tokens and server_tool_use_details kept.
        "openrouter_web_search_usage.sse",
        "openai_chat",
        PYDANTIC_AI + "test_openrouter/test_openrouter_web_search_tool_usage_stream.yaml",
        {
            "prompt_tokens": 8174,
            "completion_tokens": 30,
            "total_tokens": 8204,
            "cost": 0.0133176,
            "is_byok": False,
            "prompt_tokens_details": {
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "audio_tokens": 0,
                "video_tokens": 0,
            },
            "cost_details": {
                "upstream_inference_cost": 0.0133176,
                "upstream_inference_prompt_cost": 0.0032696,
                "upstream_inference_completions_cost": 4.8e-05,
            },
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "image_tokens": 0,
                "audio_tokens": 0,
            },
            "server_tool_use_details": {"web_search_requests": 1},
        },
        _counts(input_tokens=8174, output_tokens=30),
        "openai/gpt-4.1-mini",
        "gen-1786465029-CAkqUciXgQW34RmFaTck",
    ),
    Case(
        "openai_responses_stream.sse",
        "openai_responses",
        PYDANTIC_AI + "test_openai_responses/test_openai_responses_stream.yaml",
        {
            "input_tokens": 255,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 16,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 271,
        },
        _counts(input_tokens=255, output_tokens=16),
        "gpt-4o-2024-08-06",
        "resp_67e554a155508191900ee113293c4c830794405d35281ae2",
    ),
    Case(
        "deepseek_responses_cached.sse",
        "openai_responses",
        PYDANTIC_AI
        + "test_deepseek_responses/test_deepseek_responses[function_tool_stream].yaml (interaction 2)",
        {
            "input_tokens": 440,
            "input_tokens_details": {"cached_tokens": 384},
            "output_tokens": 14,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 454,
        },
        _counts(input_tokens=440, output_tokens=14, cached_input_tokens=384),
        "deepseek-v4-flash",
        "33df88f0-9f36-4616-95b0-ead91a37f7f1",
    ),
    Case(
        # Bedrock's OpenAI-compatible Responses endpoint adds input cache_write_tokens.
        "bedrock_mantle_responses_cache_write.sse",
        "openai_responses",
        PYDANTIC_AI + "test_bedrock_mantle/test_reused_tool_call_ids[stream].yaml (interaction 2)",
        {
            "input_tokens": 115,
            "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 14},
            "total_tokens": 145,
        },
        _counts(input_tokens=115, output_tokens=30, reasoning_tokens=14),
        "openai.gpt-5.6-luna",
        "resp_3irkem3mb4qjb6cw3bfrozqwtev62iuhg5ygpmhx2j775j2hft5q",
    ),
    Case(
        # The official SDK's own fixture; its test asserts the accumulated final message
        # (assert_basic_response in tests/lib/streaming/test_messages.py).
        "anthropic_sdk_basic.sse",
        "anthropic",
        "anthropics/anthropic-sdk-python tests/lib/streaming/fixtures/basic_response.txt",
        {"input_tokens": 11, "output_tokens": 6},
        _counts(input_tokens=11, output_tokens=6),
        "claude-3-opus-latest",
        "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK",
    ),
    Case(
        # Newer API versions repeat input and cache counts in message_delta, with the
        # thinking and server-tool details; cache_creation and service_tier come only in
        # message_start. Expected values are the SDK's assert_message_delta_fields_response
        # (anthropics/anthropic-sdk-python tests/lib/streaming/test_messages.py), whose
        # accumulator is what `messages.create` would have returned.
        "anthropic_sdk_message_delta_fields.sse",
        "anthropic",
        "anthropics/anthropic-sdk-python tests/lib/streaming/fixtures/"
        "message_delta_fields_response.txt @ d2e7c4e4275ac83004f414d73d9b366ff45d73e0",
        {
            "input_tokens": 40,
            "cache_creation_input_tokens": 12,
            "cache_read_input_tokens": 7,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 8,
            "service_tier": "standard",
            "output_tokens_details": {"thinking_tokens": 3},
            "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0},
        },
        _counts(
            input_tokens=59,
            output_tokens=8,
            cached_input_tokens=7,
            cache_write_tokens=12,
            reasoning_tokens=3,
            web_search_requests=1,
        ),
        "claude-sonnet-4-5",
        "msg_01MessageDeltaFields00000001",
    ),
    Case(
        # A server tool grows the input between message_start (899) and message_delta
        # (7244): the later count is the call's. Trimmed (52 events).
        "anthropic_web_fetch_server_tool.sse",
        "anthropic",
        PYDANTIC_AI + "test_anthropic/test_anthropic_web_fetch_tool_stream.yaml",
        {
            "input_tokens": 7244,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 153,
            "service_tier": "standard",
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 1},
        },
        _counts(input_tokens=7244, output_tokens=153),
        "claude-sonnet-4-20250514",
        "msg_015eAVGKhBrs95jUkYb2BaDt",
    ),
    Case(
        # Context compaction: message_start reports the compaction pass (55096 cache
        # reads), message_delta the final pass and the `iterations` list. The top level
        # of the non-streamed usage is the final pass too (Anthropic's compaction docs);
        # the compaction pass is billed through `iterations`, which is kept whole.
        "anthropic_compaction_cache_read.sse",
        "anthropic",
        PYDANTIC_AI + "test_anthropic/test_anthropic_compaction_usage_with_cache_streaming.yaml",
        {
            "input_tokens": 181,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 8,
            "service_tier": "standard",
            "inference_geo": "global",
            "iterations": [
                {
                    "input_tokens": 100,
                    "output_tokens": 83,
                    "cache_read_input_tokens": 55096,
                    "cache_creation_input_tokens": 0,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 0,
                        "ephemeral_1h_input_tokens": 0,
                    },
                    "type": "compaction",
                },
                {
                    "input_tokens": 181,
                    "output_tokens": 8,
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 0,
                        "ephemeral_1h_input_tokens": 0,
                    },
                    "type": "message",
                },
            ],
        },
        # The compaction pass is billed but left out of the top level: it is added.
        _counts(input_tokens=181 + 100 + 55096, output_tokens=8 + 83, cached_input_tokens=55096),
        "claude-sonnet-4-6",
        "msg_011CduoCRono7pFKoTWpPAia",
    ),
    Case(
        # Gemini repeats cumulative usageMetadata in every chunk: 31, 79, 80 candidates.
        "gemini_cumulative_usage.sse",
        "gemini",
        PYDANTIC_AI + "test_google/test_google_stream_usage_is_live_mid_stream.yaml",
        {
            "promptTokenCount": 18,
            "candidatesTokenCount": 80,
            "totalTokenCount": 133,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 18}],
            "thoughtsTokenCount": 35,
            "serviceTier": "standard",
        },
        _counts(input_tokens=18, output_tokens=115, reasoning_tokens=35),
        "gemini-2.5-flash",
        "ru1garvBEoOiqtsP2fznmQw",
    ),
    Case(
        "gemini_tool_use_prompt.sse",
        "gemini",
        PYDANTIC_AI + "test_google/test_google_model_web_fetch_tool_stream.yaml",
        {
            "promptTokenCount": 32,
            "candidatesTokenCount": 25,
            "totalTokenCount": 4704,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 32}],
            "toolUsePromptTokenCount": 4610,
            "toolUsePromptTokensDetails": [{"modality": "TEXT", "tokenCount": 4610}],
            "thoughtsTokenCount": 37,
        },
        _counts(input_tokens=4642, output_tokens=62, reasoning_tokens=37),
        "gemini-2.5-flash",
        "oRIhaZOoA8L-jrEPzfDTmQc",
    ),
    Case(
        # Vertex AI: one chunk, with the traffic type that says the flex tier served it.
        "vertex_flex_thoughts.sse",
        "gemini",
        PYDANTIC_AI + "test_google/test_google_vertex_service_tier_flex_stream.yaml",
        {
            "promptTokenCount": 5,
            "candidatesTokenCount": 1,
            "totalTokenCount": 106,
            "trafficType": "ON_DEMAND_FLEX",
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 5}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 1}],
            "thoughtsTokenCount": 100,
        },
        _counts(input_tokens=5, output_tokens=101, reasoning_tokens=100),
        "gemini-3-flash-preview",
        "a9--aa6MOKL4vdIPz7X2iQ4",
    ),
    Case(
        # The API reference's /api/chat streaming example: a first chunk and the final one.
        "ollama_chat_docs.ndjson",
        "ollama",
        "ollama/ollama docs/api.md, 'Chat Request (Streaming)'",
        {
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": 26,
            "prompt_eval_duration": 342546000,
            "eval_count": 282,
            "eval_duration": 4535599000,
        },
        _counts(input_tokens=26, output_tokens=282),
        "llama3.2",
    ),
    Case(
        "ollama_generate_docs.ndjson",
        "ollama",
        "ollama/ollama docs/api.md, 'Generate request (Streaming)'",
        {
            "total_duration": 10706818083,
            "load_duration": 6338219291,
            "prompt_eval_count": 26,
            "prompt_eval_duration": 130079000,
            "eval_count": 259,
            "eval_duration": 4232710000,
        },
        _counts(input_tokens=26, output_tokens=259),
        "llama3.2",
    ),
    Case(
        # Amazon Nova through ConverseStream; the metadata event also carries
        # metrics.latencyMs, which is not part of Converse's `usage`.
        "bedrock_converse_stream.jsonl",
        "bedrock",
        PYDANTIC_AI + "test_bedrock/test_bedrock_model_stream.yaml",
        {"inputTokens": 13, "outputTokens": 82, "serverToolUsage": {}, "totalTokens": 95},
        _counts(input_tokens=13, output_tokens=82),
    ),
    Case(
        "bedrock_converse_stream_claude.jsonl",
        "bedrock",
        PYDANTIC_AI + "test_bedrock/test_bedrock_model_thinking_part_stream.yaml",
        {"inputTokens": 36, "outputTokens": 73, "totalTokens": 109},
        _counts(input_tokens=36, output_tokens=73),
    ),
]


def _events(case: Case) -> list[dict[str, Any]]:
    """The decoded events of a transcript, `[DONE]` and comments left out."""
    raw = (FIXTURES / case.file).read_bytes()
    if case.file.endswith(".sse"):
        return [json.loads(data) for _, data in parse_sse(raw) if data != "[DONE]"]
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file)
def test_recorded_stream_folds_to_the_non_streamed_usage(case: Case) -> None:
    folder = StreamFolder(case.fmt)
    events = _events(case)
    for event in events:
        folder.add(event)
    assert folder.usage == case.usage
    assert folder.finished is True
    assert folder.model == case.model
    assert folder.response_id == case.response_id
    assert folder.chunks == len(events)
    assert normalise_usage(folder.usage) == case.counts
    assert fold_stream(case.fmt, events) == case.usage


@pytest.mark.parametrize("case", [c for c in CASES if c.file.endswith(".sse")], ids=str)
def test_recorded_sse_body_folds_through_add_data(case: Case) -> None:
    # The gateway's path: raw data lines, `[DONE]` included, decoded by the folder.
    folder = StreamFolder(case.fmt)
    parser = SSEParser()
    body = (FIXTURES / case.file).read_bytes()
    for _, data in parser.feed(body) + parser.flush():
        folder.add_data(data.encode())
    assert folder.usage == case.usage
    assert folder.finished is True


def test_the_groq_extension_and_usage_agree_and_are_not_added() -> None:
    (case,) = [c for c in CASES if c.file == "groq_usage_and_x_groq.sse"]
    last = _events(case)[-1]
    assert last["usage"] == last["x_groq"]["usage"] == case.usage


# ---------------------------------------------------------------- cut streams


def _case(file: str) -> Case:
    (case,) = [c for c in CASES if c.file == file]
    return case


def test_an_openai_stream_cut_after_two_chunks_has_no_usage_yet() -> None:
    # OpenAI's reference: "If the stream is interrupted, you may not receive the final
    # usage chunk" (CreateChatCompletionRequest.stream_options.include_usage).
    case = _case("openai_chat_include_usage.sse")
    folder = StreamFolder("openai_chat")
    for event in _events(case)[:2]:
        folder.add(event)
    assert folder.usage is None
    assert folder.finished is False
    assert folder.chunks == 2
    assert folder.model == "gpt-4o-mini-2024-07-18"


def test_an_anthropic_stream_cut_after_two_chunks_keeps_message_start() -> None:
    case = _case("anthropic_compaction_cache_read.sse")
    folder = StreamFolder("anthropic")
    for event in _events(case)[:2]:
        folder.add(event)
    # What was seen so far: the cache reads are not lost because the stream was cut.
    assert folder.usage == {
        "input_tokens": 100,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 55096,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 7,
        "service_tier": "standard",
        "inference_geo": "global",
    }
    assert folder.finished is False
    assert normalise_usage(folder.usage) == _counts(
        input_tokens=55196, output_tokens=7, cached_input_tokens=55096
    )


def test_a_gemini_stream_cut_after_two_chunks_has_the_running_total() -> None:
    case = _case("gemini_cumulative_usage.sse")
    folder = StreamFolder("gemini")
    for event in _events(case)[:2]:
        folder.add(event)
    assert folder.usage is not None
    assert folder.usage["candidatesTokenCount"] == 79
    assert folder.usage["totalTokenCount"] == 132
    assert folder.finished is False


def test_a_bedrock_stream_cut_before_metadata_has_no_usage() -> None:
    events = _events(_case("bedrock_converse_stream.jsonl"))
    assert "metadata" in events[-1] and "messageStop" in events[-2]
    folder = StreamFolder("bedrock")
    for event in events[:-1]:
        folder.add(event)
    assert folder.usage is None
    assert folder.finished is False


# ---------------------------------------------------------------- cumulative, never summed


def test_usage_repeated_in_every_chunk_is_not_summed() -> None:
    # vLLM's `stream_options.continuous_usage_stats` (and xAI, Perplexity) put the
    # running totals in every chunk, then OpenAI's usage-only chunk at the end.
    chunks: list[dict[str, Any]] = [
        {
            "id": "chatcmpl-1",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
            "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n},
        }
        for n in (1, 2, 3)
    ]
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    final = {
        "id": "chatcmpl-1",
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    folder = StreamFolder("openai_chat")
    for chunk in [*chunks, final]:
        folder.add(chunk)
    assert folder.usage == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_the_same_usage_chunk_twice_counts_once() -> None:
    case = _case("openai_chat_include_usage.sse")
    events = _events(case)
    folder = StreamFolder("openai_chat")
    for event in [*events, events[-1]]:
        folder.add(event)
    assert folder.usage == case.usage
    assert normalise_usage(folder.usage) == case.counts


def test_anthropic_cumulative_output_is_taken_not_added() -> None:
    folder = StreamFolder("anthropic")
    folder.add(
        {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}
    )
    for n in (4, 9, 15):
        folder.add({"type": "message_delta", "usage": {"output_tokens": n}})
    assert folder.usage == {"input_tokens": 5, "output_tokens": 15}


def test_a_null_in_a_later_report_does_not_erase_an_earlier_value() -> None:
    # The SDK's MessageDeltaUsage types input and cache counts as optional: null means
    # "not reported here", not zero.
    folder = StreamFolder("anthropic")
    folder.add(
        {
            "type": "message_start",
            "message": {
                "usage": {
                    "input_tokens": 10,
                    "cache_read_input_tokens": 900,
                    "cache_creation": {"ephemeral_5m_input_tokens": 0},
                    "output_tokens": 1,
                }
            },
        }
    )
    folder.add(
        {
            "type": "message_delta",
            "usage": {
                "input_tokens": None,
                "cache_read_input_tokens": None,
                "cache_creation": {"ephemeral_1h_input_tokens": 30},
                "output_tokens": 20,
                "server_tool_use": None,
            },
        }
    )
    assert folder.usage == {
        "input_tokens": 10,
        "cache_read_input_tokens": 900,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 30},
        "output_tokens": 20,
        "server_tool_use": None,
    }


# ---------------------------------------------------------------- the usage-only chunk


def test_only_openais_extra_chunk_is_usage_only() -> None:
    events = _events(_case("openai_chat_include_usage.sse"))
    folder = StreamFolder("openai_chat")
    assert [folder.is_usage_only(e) for e in events] == [False] * (len(events) - 1) + [True]
    # OpenRouter's usage chunk carries a choice: the caller sees it either way.
    for event in _events(_case("openrouter_usage_chunk_with_choice.sse")):
        assert folder.is_usage_only(event) is False
    # Azure's first chunk has empty choices but no usage (its prompt filter results).
    azure_first = {"id": "", "model": "", "choices": [], "prompt_filter_results": []}
    assert folder.is_usage_only(azure_first) is False
    assert StreamFolder("anthropic").is_usage_only(events[-1]) is False


def test_azures_empty_model_on_the_first_chunk_is_not_the_model() -> None:
    folder = StreamFolder("openai_chat")
    folder.add({"id": "", "model": "", "choices": [], "prompt_filter_results": []})
    assert folder.model is None and folder.response_id is None
    folder.add({"id": "chatcmpl-9", "model": "gpt-4o-2024-11-20", "choices": []})
    assert folder.model == "gpt-4o-2024-11-20" and folder.response_id == "chatcmpl-9"


# ---------------------------------------------------------------- other end states


@pytest.mark.parametrize("kind", ["response.incomplete", "response.failed"])
def test_responses_ending_incomplete_or_failed_still_carry_usage(kind: str) -> None:
    # OpenAI Responses streaming events: both carry the whole `response`, usage included.
    folder = StreamFolder("openai_responses")
    folder.add({"type": "response.created", "response": {"id": "resp_1", "usage": None}})
    assert folder.usage is None and folder.response_id == "resp_1"
    usage = {"input_tokens": 20, "output_tokens": 7, "total_tokens": 27}
    folder.add({"type": kind, "response": {"id": "resp_1", "model": "o3", "usage": usage}})
    assert folder.usage == usage
    assert folder.finished is True
    assert folder.model == "o3"


def test_bedrock_cache_counts_come_through() -> None:
    # TokenUsage in the Bedrock API reference (API_runtime_TokenUsage.html):
    # inputTokens excludes cacheReadInputTokens and cacheWriteInputTokens.
    folder = StreamFolder("bedrock")
    folder.add({"messageStart": {"role": "assistant"}})
    folder.add({"messageStop": {"stopReason": "end_turn"}})
    usage = {
        "inputTokens": 21,
        "outputTokens": 50,
        "totalTokens": 2071,
        "cacheReadInputTokens": 1500,
        "cacheWriteInputTokens": 500,
    }
    folder.add({"metadata": {"usage": usage, "metrics": {"latencyMs": 800}}})
    assert folder.usage == usage
    assert normalise_usage(folder.usage) == _counts(
        input_tokens=2021, output_tokens=50, cached_input_tokens=1500, cache_write_tokens=500
    )


def test_an_ollama_load_reply_has_no_usage() -> None:
    # docs/api.md "Load a model": done with done_reason "load" and no counts.
    folder = StreamFolder("ollama")
    folder.add(
        {
            "model": "llama3.2",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "load",
        }
    )
    assert folder.usage is None
    assert folder.finished is True


def test_add_data_decodes_and_ends_on_done() -> None:
    folder = StreamFolder("openai_chat")
    assert folder.add_data("not json") is None
    event = folder.add_data(b'{"id":"c1","model":"m","choices":[]}')
    assert event == {"id": "c1", "model": "m", "choices": []}
    assert folder.finished is False
    assert folder.add_data(" [DONE]") is None
    assert folder.finished is True
    assert folder.chunks == 3


def test_usage_is_a_copy() -> None:
    folder = StreamFolder("gemini")
    folder.add(
        {"usageMetadata": {"promptTokenCount": 3, "promptTokensDetails": [{"tokenCount": 3}]}}
    )
    first = folder.usage
    assert first is not None
    first["promptTokenCount"] = 99
    first["promptTokensDetails"][0]["tokenCount"] = 99
    assert folder.usage == {"promptTokenCount": 3, "promptTokensDetails": [{"tokenCount": 3}]}


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'openai'"):
        StreamFolder("openai")


def test_nothing_seen_is_none() -> None:
    for fmt in STREAM_FORMATS:
        assert fold_stream(fmt, []) is None


# ---------------------------------------------------------------- hostile input

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "usage",
                    "message",
                    "response",
                    "choices",
                    "x_groq",
                    "usageMetadata",
                    "candidates",
                    "done",
                    "metadata",
                    "model",
                    "id",
                    "eval_count",
                    "finish_reason",
                    "finishReason",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(fmt=st.sampled_from(STREAM_FORMATS), events=st.lists(json_values, max_size=6))
def test_folding_never_raises_on_what_a_provider_might_send(fmt: str, events: list[Any]) -> None:
    folder = StreamFolder(fmt)
    for event in events:
        folder.add(event)
        folder.is_usage_only(event)
    assert folder.chunks == len(events)
    assert folder.usage is None or isinstance(folder.usage, dict)
    assert folder.model is None or isinstance(folder.model, str)


# ---------------------------------------------------------------- any split of the bytes


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from([c for c in CASES if c.file.endswith(".sse")]),
    cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=12),
    crlf=st.booleans(),
)
def test_any_split_of_the_bytes_folds_the_same(case: Case, cuts: list[float], crlf: bool) -> None:
    body = (FIXTURES / case.file).read_bytes()
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    positions = sorted({int(c * len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *positions], [*positions, len(body)], strict=True)]
    parser = SSEParser()
    got = [e for piece in pieces for e in parser.feed(piece)] + parser.flush()
    assert got == parse_sse((FIXTURES / case.file).read_bytes())
    folder = StreamFolder(case.fmt)
    for _, data in got:
        folder.add_data(data)
    assert folder.usage == case.usage


# ---------------------------------------------------------------- SDK objects


def test_a_pydantic_model_from_an_sdk_folds_like_its_json() -> None:
    class _Camel(BaseModel):
        # google-genai's models: snake_case fields, camelCase JSON.
        model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    class Usage(_Camel):
        prompt_token_count: int | None = None
        candidates_token_count: int | None = None
        cached_content_token_count: int | None = None

    class Chunk(_Camel):
        usage_metadata: Usage | None = None
        model_version: str | None = None

    chunk = Chunk.model_validate(
        {
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
            "modelVersion": "gemini-2.5-flash",
        }
    )
    folder = StreamFolder("gemini")
    folder.add(chunk)
    # Fields the provider did not send stay out, as in its JSON.
    assert folder.usage == {"promptTokenCount": 4, "candidatesTokenCount": 2}
    assert folder.model == "gemini-2.5-flash"

    class Broken:
        def model_dump(self, **kwargs: Any) -> dict[str, Any]:
            raise RuntimeError("not today")

    folder.add(Broken())
    assert folder.chunks == 2
