"""Provider shapes at the event level: inference, clamping instead of refusing, SDK spellings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices.data_snapshot import get_snapshot

from ai_usage_exporter.core.events.model import EventError
from ai_usage_exporter.core.events.parse import parse_event
from ai_usage_exporter.core.events.usage import normalise_usage
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.core.shapes import MAPS, USAGE_FIELDS, infer_provider

NOW = 1_790_000_000.0


def counts(**nonzero: int) -> dict[str, int]:
    return {**dict.fromkeys(USAGE_FIELDS, 0), **nonzero}


def one(event: dict[str, Any]) -> Any:
    (parsed,) = parse_event(event, now=NOW)
    return parsed


def test_reasoning_outside_completion_is_told_by_total_tokens_for_any_provider() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 35,
             "completion_tokens_details": {"reasoning_tokens": 20}}  # fmt: skip
    e = one({"provider": "some-new-host", "model": "m", "usage": usage})
    assert (e.output_tokens, e.reasoning_tokens) == (25, 20)
    inside = {**usage, "completion_tokens": 25, "total_tokens": 35}
    e = one({"provider": "some-new-host", "model": "m", "usage": inside})
    assert (e.output_tokens, e.reasoning_tokens) == (25, 20)


def test_xai_reasoning_is_outside_even_without_a_total() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5,
             "completion_tokens_details": {"reasoning_tokens": 2}}  # fmt: skip
    assert one({"provider": "xai", "model": "grok-3-mini", "usage": usage}).output_tokens == 7
    assert one({"provider": "openai", "model": "o3", "usage": usage}).output_tokens == 5


def test_a_providers_inconsistent_object_is_clamped_not_refused() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110,
             "prompt_tokens_details": {"cached_tokens": 150, "audio_tokens": 120},
             "completion_tokens_details": {"reasoning_tokens": 30, "audio_tokens": 40}}  # fmt: skip
    e = one({"provider": "openai", "model": "gpt-4o", "usage": usage})
    assert (e.input_tokens, e.cached_input_tokens, e.audio_input_tokens) == (100, 100, 100)
    assert (e.output_tokens, e.reasoning_tokens, e.audio_output_tokens) == (10, 10, 10)
    # The same numbers sent by hand are the caller's mistake, and refused by name.
    with pytest.raises(EventError) as err:
        parse_event({"provider": "openai", "model": "gpt-4o", "input_tokens": 100,
                     "cached_input_tokens": 150}, now=NOW)  # fmt: skip
    assert err.value.details[0].field == "cached_input_tokens"


def test_garbage_in_a_provider_object_is_still_refused_by_field() -> None:
    with pytest.raises(EventError) as err:
        parse_event({"provider": "openai", "model": "m", "usage": {"prompt_tokens": -1}}, now=NOW)
    assert err.value.details[0].field == "usage.prompt_tokens"
    # A whole-number float from an SDK dump is that number.
    assert (
        one({"provider": "openai", "model": "m", "usage": {"prompt_tokens": 12.0}}).input_tokens
        == 12
    )


@pytest.mark.parametrize(
    ("body", "provider", "model"),
    [
        ({"type": "message", "role": "assistant", "model": "claude-x",
          "usage": {"input_tokens": 1, "output_tokens": 2}}, "anthropic", "claude-x"),
        ({"usageMetadata": {"promptTokenCount": 1}, "modelVersion": "gemini-2.5-flash"},
         "google", "gemini-2.5-flash"),
        ({"output": {"message": {}}, "usage": {"inputTokens": 1, "outputTokens": 1},
          "metrics": {"latencyMs": 5}}, "bedrock", None),
        ({"model": "llama3", "done": True, "prompt_eval_count": 1, "eval_count": 1}, "ollama", "llama3"),
        ({"object": "chat.completion", "model": "gpt-4o", "usage": {"prompt_tokens": 1}}, "openai", "gpt-4o"),
        ({"object": "response", "model": "gpt-4.1", "usage": {"input_tokens": 1}}, "openai", "gpt-4.1"),
        ({"object": "chat.completion", "model": "grok-4", "usage": {"prompt_tokens": 1}}, "xai", "grok-4"),
        ({"object": "chat.completion", "model": "deepseek-chat",
          "usage": {"prompt_tokens": 1, "prompt_cache_hit_tokens": 0}}, "deepseek", "deepseek-chat"),
    ],
)  # fmt: skip
def test_the_provider_and_model_are_taken_from_a_whole_response(
    body: dict[str, Any], provider: str, model: str | None
) -> None:
    assert infer_provider(body) == provider
    event: dict[str, Any] = {"response": body}
    if model is None:
        event["model"] = "given"
    e = one(event)
    assert (e.provider, e.model) == (provider, model or "given")


def test_a_given_provider_wins_over_the_inferred_one() -> None:
    body = {"object": "chat.completion", "model": "gpt-4o", "usage": {"prompt_tokens": 1}}
    assert one({"provider": "azure", "response": body}).provider == "azure"


def test_a_shape_shared_by_many_providers_still_needs_a_provider() -> None:
    with pytest.raises(EventError) as err:
        parse_event({"model": "m", "usage": {"prompt_tokens": 1}}, now=NOW)
    assert err.value.details[0].field == "provider"
    assert one({"model": "m", "usage": {"cache_read_input_tokens": 1}}).provider == "anthropic"
    assert one({"model": "m", "usageMetadata": {"promptTokenCount": 1}}).provider == "google"


def test_gemini_sdk_dump_in_snake_case_reads_like_the_rest_api() -> None:
    dump = {"prompt_token_count": 100, "candidates_token_count": 20, "thoughts_token_count": 5,
            "cached_content_token_count": 40, "tool_use_prompt_token_count": 3,
            "prompt_tokens_details": [{"modality": "MediaModality.AUDIO", "token_count": 30}],
            "candidates_tokens_details": [{"modality": "IMAGE", "token_count": 10}]}  # fmt: skip
    assert normalise_usage(dump) == counts(
        input_tokens=103, output_tokens=25, cached_input_tokens=40, reasoning_tokens=5,
        audio_input_tokens=30, image_output_tokens=10,
    )  # fmt: skip


def test_bedrock_one_hour_cache_writes_from_cache_details() -> None:
    usage = {"inputTokens": 10, "outputTokens": 5, "cacheReadInputTokens": 100,
             "cacheWriteInputTokens": 300, "totalTokens": 415,
             "cacheDetails": [{"ttl": "5m", "inputTokens": 100}, {"ttl": "1h", "inputTokens": 200}]}  # fmt: skip
    assert normalise_usage(usage) == counts(
        input_tokens=410, output_tokens=5, cached_input_tokens=100, cache_write_tokens=300,
        cache_write_1h_tokens=200,
    )  # fmt: skip


def test_anthropic_compaction_iterations_are_added_as_documented() -> None:
    # Anthropic's compaction docs: the top level leaves out the compaction pass.
    usage = {"input_tokens": 23000, "output_tokens": 1000, "iterations": [
        {"type": "compaction", "input_tokens": 180000, "output_tokens": 3500},
        {"type": "message", "input_tokens": 23000, "output_tokens": 1000}]}  # fmt: skip
    got = normalise_usage(usage, provider="anthropic")
    assert (got["input_tokens"], got["output_tokens"]) == (203000, 4500)


def test_anthropic_cache_creation_without_the_flat_total() -> None:
    usage = {"input_tokens": 5, "output_tokens": 1,
             "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}}  # fmt: skip
    assert normalise_usage(usage) == counts(
        input_tokens=35, output_tokens=1, cache_write_tokens=30, cache_write_1h_tokens=20
    )


def test_a_responses_tier_and_a_groq_tier_are_recorded() -> None:
    body = {"object": "response", "model": "gpt-4o-mini", "service_tier": "flex",
            "usage": {"input_tokens": 1, "output_tokens": 1}}  # fmt: skip
    assert one({"response": body}).service_tier == "flex"
    assert one({"provider": "openai", "model": "m", "service_tier": "priority",
                "usage": {"prompt_tokens": 1}}).service_tier == "priority"  # fmt: skip


def test_the_readme_provider_table_lists_every_mapping() -> None:
    """Each (provider field, our field) pair of every shape module appears in the README."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Provider usage shapes", 1)[1].split("\n## ", 1)[0]
    rows = {
        tuple(cell.strip().strip("`") for cell in line.strip("|").split("|"))
        for line in section.splitlines()
        if line.startswith("|") and not re.match(r"^\|\s*-", line)
    }
    missing = [
        (shape, source, target)
        for shape, table in MAPS.items()
        for source, target in table
        if (shape, source, target) not in rows
    ]
    assert missing == []


def test_perplexity_reasoning_and_citations_are_output_and_searches_are_counted() -> None:
    # Perplexity's usage (as genai-prices' perplexity extractor reads it): reasoning and
    # citation tokens beside completion_tokens, searches as num_search_queries.
    usage = {"prompt_tokens": 7, "completion_tokens": 3000, "citation_tokens": 500,
             "num_search_queries": 20, "reasoning_tokens": 40000}  # fmt: skip
    e = one({"provider": "perplexity", "model": "sonar-deep-research", "usage": usage})
    assert (e.input_tokens, e.output_tokens, e.reasoning_tokens, e.web_search_requests) == (
        7,
        43500,
        40000,
        20,
    )


def test_cohere_chat_is_counted_by_its_billed_units() -> None:
    # Cohere v2 Chat as recorded in vercel/ai packages/cohere/src/__fixtures__/cohere-text.json
    # and its stream cohere-text.chunks.txt: billed 12 in, 7 out; the model saw 507 and 10.
    usage = {"billed_units": {"input_tokens": 12, "output_tokens": 7},
             "tokens": {"input_tokens": 507, "output_tokens": 10}, "cached_tokens": 448}  # fmt: skip
    body = {
        "id": "a",
        "finish_reason": "COMPLETE",
        "message": {"role": "assistant"},
        "usage": usage,
    }
    e = one({"model": "command-a-03-2025", "response": body})
    assert (e.provider, e.input_tokens, e.output_tokens, e.cached_input_tokens) == (
        "cohere",
        12,
        7,
        0,
    )
    stream = [{"type": "message-start", "id": "a", "delta": {"message": {"role": "assistant"}}},
              {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}},
              {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": usage}}]  # fmt: skip
    s = one({"model": "command-a-03-2025", "stream": stream})
    assert (s.provider, s.input_tokens, s.output_tokens) == ("cohere", 12, 7)
    # v1 Chat carries the same object as `meta`.
    v1 = one(
        {"provider": "cohere", "model": "command-r", "response": {"text": "Hi", "meta": usage}}
    )
    assert (v1.input_tokens, v1.output_tokens) == (12, 7)


def test_a_real_call_that_reported_no_usage_is_counted_with_no_tokens() -> None:
    # Gemini blocking a prompt (pydantic-ai tests/models/cassettes/test_google/
    # test_google_model_armor_prompt_template_text_gets_blocked.yaml): usageMetadata
    # holds only the traffic type.
    blocked = {"promptFeedback": {"blockReason": "MODEL_ARMOR"},
               "usageMetadata": {"trafficType": "ON_DEMAND"}, "modelVersion": "gemini-2.5-flash"}  # fmt: skip
    e = one({"response": blocked})
    assert (e.provider, e.model, e.input_tokens, e.output_tokens) == (
        "google", "gemini-2.5-flash", 0, 0)  # fmt: skip
    assert one({"provider": "vertex", "model": "m", "usageMetadata": {"trafficType": "ON_DEMAND"}})
    # A background Responses job still queued (test_background_mode_vcr.yaml): usage null.
    queued = {"id": "resp_1", "object": "response", "status": "queued", "background": True,
              "model": "o4-mini-2025-04-16", "output": [], "usage": None}  # fmt: skip
    q = one({"response": queued})
    assert (q.provider, q.model, q.input_tokens, q.output_tokens) == (
        "openai",
        "o4-mini-2025-04-16",
        0,
        0,
    )
    # A stream that failed before any usage (vercel/ai openai-error.1.chunks.txt).
    failed = [{"type": "response.created", "response": {"id": "r", "model": "gpt-4.1", "usage": None}},
              {"type": "error", "error": {"code": "insufficient_quota"}},
              {"type": "response.failed", "response": {"id": "r", "model": "gpt-4.1", "usage": None}}]  # fmt: skip
    f = one({"stream": failed})
    assert (f.provider, f.model, f.input_tokens, f.output_tokens) == ("openai", "gpt-4.1", 0, 0)
    # Not a provider's body at all: still refused, naming the field.
    with pytest.raises(EventError, match="response: holds no usage object"):
        one({"provider": "openai", "model": "m", "response": {"foo": 1}})
    with pytest.raises(EventError, match="usage: has no token counts"):
        one({"provider": "openai", "model": "m", "usage": {"foo": 1}})


def test_openrouter_byok_cost_adds_the_upstream_bill_to_the_fee() -> None:
    # pydantic-ai tests/models/cassettes/test_openrouter/test_openrouter_google_nested_schema.yaml:
    # a BYOK call; OpenRouter charged 0 and Google billed the user's key 0.0003253.
    usage = {"completion_tokens": 91, "completion_tokens_details": {"image_tokens": 0, "reasoning_tokens": 0},
             "cost": 0, "cost_details": {"upstream_inference_completions_cost": 0.0002275,
                                         "upstream_inference_cost": 0.0003253,
                                         "upstream_inference_prompt_cost": 9.78e-05},
             "is_byok": True, "prompt_tokens": 326, "total_tokens": 417}  # fmt: skip
    e = one({"provider": "openrouter", "model": "google/gemini-2.5-flash", "usage": usage})
    assert e.provider_cost_usd == pytest.approx(0.0003253, abs=1e-15)
    # Not BYOK: upstream_inference_cost equals the cost and is not added again.
    usage2 = {**usage, "is_byok": False, "cost": 0.0003253}
    e2 = one({"provider": "openrouter", "model": "google/gemini-2.5-flash", "usage": usage2})
    assert e2.provider_cost_usd == pytest.approx(0.0003253, abs=1e-15)


def test_a_legacy_completions_body_names_openai() -> None:
    # vercel/ai packages/openai/src/completion/__fixtures__/openai-completion-text.json
    body = {"id": "cmpl-1", "object": "text_completion", "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "Hi", "index": 0, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}  # fmt: skip
    e = one({"response": body})
    assert (e.provider, e.model, e.input_tokens, e.output_tokens) == (
        "openai", "gpt-3.5-turbo-instruct", 10, 20)  # fmt: skip


def test_gemini_cache_reads_by_modality_and_video_in_snake_case() -> None:
    # google-genai's GenerateContentResponseUsageMetadata: cache_tokens_details splits
    # cached_content_token_count by modality, as prompt_tokens_details splits the prompt.
    dump = {"prompt_token_count": 1000, "candidates_token_count": 50,
            "cached_content_token_count": 700,
            "prompt_tokens_details": [
                {"modality": "TEXT", "token_count": 100}, {"modality": "AUDIO", "token_count": 300},
                {"modality": "IMAGE", "token_count": 150}, {"modality": "DOCUMENT", "token_count": 50},
                {"modality": "VIDEO", "token_count": 400}],
            "cache_tokens_details": [
                {"modality": "TEXT", "token_count": 60}, {"modality": "AUDIO", "token_count": 250},
                {"modality": "MediaModality.IMAGE", "token_count": 80},
                {"modality": "DOCUMENT", "token_count": 10}, {"modality": "VIDEO", "token_count": 300}],
            "candidates_tokens_details": [{"modality": "VIDEO", "token_count": 20}]}  # fmt: skip
    assert normalise_usage(dump) == counts(
        input_tokens=1000, output_tokens=50, cached_input_tokens=700, audio_input_tokens=300,
        image_input_tokens=200, video_input_tokens=400, cached_audio_input_tokens=250,
        cached_image_input_tokens=90, cached_video_input_tokens=300, video_output_tokens=20,
    )  # fmt: skip


def test_a_cached_modality_above_its_parents_is_cut_to_fit() -> None:
    usage = {"promptTokenCount": 100, "cachedContentTokenCount": 40,
             "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 60}],
             "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 50},
                                    {"modality": "IMAGE", "tokenCount": 5}]}  # fmt: skip
    e = one({"provider": "google", "model": "gemini-2.5-flash", "usage": usage})
    # 50 cached audio > 40 cached: cut to 40; 5 cached image > 0 image: cut to 0.
    assert (e.cached_audio_input_tokens, e.cached_image_input_tokens) == (40, 0)


def test_cached_modalities_sent_by_hand_must_be_parts_of_both_parents() -> None:
    base = {"provider": "google", "model": "m", "input_tokens": 100, "cached_input_tokens": 40,
            "audio_input_tokens": 30}  # fmt: skip
    for extra, field in (
        ({"cached_audio_input_tokens": 35}, "cached_audio_input_tokens"),  # > audio
        ({"audio_input_tokens": 90, "cached_audio_input_tokens": 50}, "cached_audio_input_tokens"),
        ({"cached_video_input_tokens": 1}, "cached_video_input_tokens"),  # no video at all
        ({"video_input_tokens": 101}, "video_input_tokens"),
        ({"video_output_tokens": 1}, "video_output_tokens"),
    ):
        with pytest.raises(EventError) as err:
            parse_event({**base, **extra}, now=NOW)
        assert err.value.details[0].field == field, extra
    e = one({**base, "cached_audio_input_tokens": 30, "video_input_tokens": 60})
    assert (e.cached_audio_input_tokens, e.video_input_tokens) == (30, 60)


def test_openai_realtime_usage_counts_cached_audio_and_image() -> None:
    # openai-python types/realtime/realtime_response_usage_input_token_details.py:
    # input_token_details.cached_tokens_details splits the cached tokens by modality.
    usage = {"total_tokens": 2600, "input_tokens": 2400, "output_tokens": 200,
             "input_token_details": {"text_tokens": 600, "audio_tokens": 1500, "image_tokens": 300,
                                     "cached_tokens": 1280,
                                     "cached_tokens_details": {"text_tokens": 256,
                                                               "audio_tokens": 896,
                                                               "image_tokens": 128}},
             "output_token_details": {"text_tokens": 40, "audio_tokens": 160}}  # fmt: skip
    assert normalise_usage(usage, provider="openai") == counts(
        input_tokens=2400, output_tokens=200, cached_input_tokens=1280, audio_input_tokens=1500,
        image_input_tokens=300, cached_audio_input_tokens=896, cached_image_input_tokens=128,
        audio_output_tokens=160,
    )  # fmt: skip
    # Priced as genai-prices' own Realtime extractor reads the same object.
    openai = next(p for p in get_snapshot().providers if p.id == "openai")
    _, theirs = openai.extract_usage({"response": {"usage": usage}}, api_flavor="realtime")
    want = genai_prices.calc_price(theirs, "gpt-realtime", provider_id="openai").total_price
    e = one({"provider": "openai", "model": "gpt-realtime", "usage": usage})
    assert PriceBook().price(e).total == pytest.approx(float(want), abs=1e-12)
