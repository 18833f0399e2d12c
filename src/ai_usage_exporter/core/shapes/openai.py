"""OpenAI Chat Completions and Responses usage, and the providers that copy them.

Chat: ``prompt_tokens``/``completion_tokens`` with ``prompt_tokens_details`` and
``completion_tokens_details`` (openai-python ``types/completion_usage.py``). Responses:
``input_tokens``/``output_tokens`` with ``input_tokens_details`` and
``output_tokens_details`` (``types/responses/response_usage.py``); gpt-image uses the
same shape with text and image tokens in the details. The Realtime API's
``response.usage`` spells them ``input_token_details``/``output_token_details`` and
splits the cached tokens by modality in ``input_token_details.cached_tokens_details``
(openai-python ``types/realtime/realtime_response_usage*.py``): cached audio and image
have cache rates of their own (gpt-realtime). Azure OpenAI, Groq, DeepSeek,
Mistral, OpenRouter, Together, Fireworks, vLLM and xAI return one of the two.

Every detail count is a subset of its parent, except where a provider reports
reasoning beside the completion (xAI's Grok: ``total_tokens`` = prompt + completion +
reasoning). That is decided by the object's own ``total_tokens`` when it tells, else by
the provider's documentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.shapes._common import Counter, Reading, cost_value, sub, tier_value

# Providers whose documentation says reasoning tokens are not in completion_tokens.
REASONING_OUTSIDE: frozenset[str] = frozenset(("xai", "x-ai", "grok", "perplexity"))

# Where each count comes from, for the README's mapping table (checked by a test).
CHAT_MAP: tuple[tuple[str, str], ...] = (
    ("prompt_tokens", "input_tokens"),
    ("completion_tokens", "output_tokens (+ reasoning when reported beside it)"),
    ("prompt_tokens_details.cached_tokens", "cached_input_tokens"),
    ("prompt_cache_hit_tokens (DeepSeek)", "cached_input_tokens"),
    ("prompt_tokens_details.cache_write_tokens", "cache_write_tokens"),
    ("prompt_tokens_details.audio_tokens", "audio_input_tokens"),
    ("prompt_tokens_details.image_tokens", "image_input_tokens"),
    ("completion_tokens_details.reasoning_tokens", "reasoning_tokens"),
    ("completion_tokens_details.audio_tokens", "audio_output_tokens"),
    ("completion_tokens_details.image_tokens", "image_output_tokens"),
    ("reasoning_tokens, citation_tokens (Perplexity)", "added to output_tokens"),
    ("num_search_queries (Perplexity)", "web_search_requests"),
    (
        "cost (+ cost_details.upstream_inference_cost if is_byok: OpenRouter)",
        "provider-reported cost",
    ),
    ("cost_in_usd_ticks / 1e10 (xAI)", "provider-reported cost"),
    ("service_tier", "service_tier"),
)
RESPONSES_MAP: tuple[tuple[str, str], ...] = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("input_tokens_details.cached_tokens", "cached_input_tokens"),
    ("input_tokens_details.cache_write_tokens", "cache_write_tokens"),
    ("input_tokens_details.audio_tokens", "audio_input_tokens"),
    ("input_tokens_details.image_tokens", "image_input_tokens"),
    (
        "input_token_details, output_token_details (Realtime)",
        "as input_tokens_details, output_tokens_details",
    ),
    (
        "input_token_details.cached_tokens_details.audio_tokens (Realtime)",
        "cached_audio_input_tokens",
    ),
    (
        "input_token_details.cached_tokens_details.image_tokens (Realtime)",
        "cached_image_input_tokens",
    ),
    ("output_tokens_details.reasoning_tokens", "reasoning_tokens"),
    ("output_tokens_details.audio_tokens", "audio_output_tokens"),
    ("output_tokens_details.image_tokens", "image_output_tokens"),
    (
        "cost (+ cost_details.upstream_inference_cost if is_byok: OpenRouter)",
        "provider-reported cost",
    ),
    ("cost_in_usd_ticks / 1e10 (xAI)", "provider-reported cost"),
    ("service_tier", "service_tier"),
)


def _reasoning_outside(
    usage: Mapping[str, Any], prompt: int, completion: int, reasoning: int, provider: str | None
) -> bool:
    if not reasoning:
        return False
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        # The object's own total is the witness of how it counts.
        if total == prompt + completion:
            return False
        if total == prompt + completion + reasoning:
            return True
    if provider is not None and provider.lower() in REASONING_OUTSIDE:
        return True
    # Reasoning that exceeds the completion cannot be part of it.
    return reasoning > completion


# xAI bills in ticks: 1 USD = 10^10 ticks (docs.x.ai, "Cost Tracking").
XAI_TICKS_PER_USD = 10_000_000_000


def _provider_cost(usage: Mapping[str, Any]) -> float | None:
    # xAI reports the exact amount billed as usage.cost_in_usd_ticks; OpenRouter the
    # credits charged as usage.cost (USD); Perplexity and some gateways an object with
    # total_cost.
    ticks = usage.get("cost_in_usd_ticks")
    if isinstance(ticks, int) and not isinstance(ticks, bool) and ticks >= 0:
        return ticks / XAI_TICKS_PER_USD
    cost = usage.get("cost")
    if isinstance(cost, Mapping):
        return cost_value(cost.get("total_cost"))
    billed = cost_value(cost)
    if billed is not None and usage.get("is_byok") is True:
        # Bring-your-own-key: `cost` is only OpenRouter's fee; the upstream provider
        # bills the user's own key `cost_details.upstream_inference_cost` (OpenRouter's
        # "Usage Accounting" docs), so the call cost both.
        upstream = cost_value(sub(usage, "cost_details").get("upstream_inference_cost"))
        if upstream is not None:
            billed += upstream
    return billed


def read_chat(
    usage: Mapping[str, Any], count: Counter, provider: str | None, reading: Reading
) -> None:
    c = reading.counts
    prompt_d, pw = count.sub(usage, "prompt_tokens_details")
    completion_d, cw = count.sub(usage, "completion_tokens_details")
    prompt = count(usage, "prompt_tokens")
    completion = count(usage, "completion_tokens")
    reasoning = count(completion_d, "reasoning_tokens", cw)
    if not reasoning and "reasoning_tokens" in usage:
        # xAI's older top-level spelling, and Perplexity's: beside the completion.
        reasoning = count(usage, "reasoning_tokens")
    # Perplexity bills citation tokens as output, reported beside completion_tokens.
    citations = count(usage, "citation_tokens")
    cached = count(prompt_d, "cached_tokens", pw)
    if not cached:
        # DeepSeek reports its cache hits beside the OpenAI fields; xAI once did the same.
        cached = count(usage, "prompt_cache_hit_tokens") or count(
            usage, "cached_prompt_text_tokens"
        )
    c["input_tokens"] = prompt
    c["output_tokens"] = completion + citations
    if _reasoning_outside(usage, prompt, completion + citations, reasoning, provider):
        c["output_tokens"] += reasoning
        reading.notes.append("reasoning_tokens reported beside completion_tokens; added to output")
    c["cached_input_tokens"] = cached
    c["cache_write_tokens"] = count(prompt_d, "cache_write_tokens", pw)
    c["audio_input_tokens"] = count(prompt_d, "audio_tokens", pw)
    c["image_input_tokens"] = count(prompt_d, "image_tokens", pw)
    c["reasoning_tokens"] = reasoning
    c["audio_output_tokens"] = count(completion_d, "audio_tokens", cw)
    c["image_output_tokens"] = count(completion_d, "image_tokens", cw)
    c["web_search_requests"] = count(usage, "num_search_queries")
    reading.cost_usd = _provider_cost(usage)
    reading.service_tier = tier_value(usage.get("service_tier"))


def read_responses(
    usage: Mapping[str, Any], count: Counter, provider: str | None, reading: Reading
) -> None:
    c = reading.counts
    # Realtime writes "token_details" for Responses' "tokens_details".
    realtime = "input_tokens_details" not in usage and "input_token_details" in usage
    in_d, iw = count.sub(usage, "input_token_details" if realtime else "input_tokens_details")
    out_d, ow = count.sub(usage, "output_token_details" if realtime else "output_tokens_details")
    inp = count(usage, "input_tokens")
    out = count(usage, "output_tokens")
    reasoning = count(out_d, "reasoning_tokens", ow)
    c["input_tokens"] = inp
    c["output_tokens"] = out
    if _reasoning_outside(usage, inp, out, reasoning, provider):
        c["output_tokens"] = out + reasoning
        reading.notes.append("reasoning_tokens reported beside output_tokens; added to output")
    c["cached_input_tokens"] = count(in_d, "cached_tokens", iw)
    c["cache_write_tokens"] = count(in_d, "cache_write_tokens", iw)
    c["audio_input_tokens"] = count(in_d, "audio_tokens", iw)
    c["image_input_tokens"] = count(in_d, "image_tokens", iw)
    cached_d = in_d.get("cached_tokens_details")
    if isinstance(cached_d, Mapping):
        where = f"{iw}.cached_tokens_details"
        c["cached_audio_input_tokens"] = count(cached_d, "audio_tokens", where)
        c["cached_image_input_tokens"] = count(cached_d, "image_tokens", where)
    c["reasoning_tokens"] = reasoning
    c["audio_output_tokens"] = count(out_d, "audio_tokens", ow)
    c["image_output_tokens"] = count(out_d, "image_tokens", ow)
    reading.cost_usd = _provider_cost(usage)
    reading.service_tier = tier_value(usage.get("service_tier"))


def is_chat(usage: Mapping[str, Any]) -> bool:
    return "prompt_tokens" in usage or "completion_tokens" in usage


def provider_hint(response: Mapping[str, Any]) -> str | None:
    """The OpenAI-compatible provider a whole response comes from, when it says so."""
    usage = sub(response, "usage")
    if "x_groq" in response or "queue_time" in usage:
        return "groq"
    if "prompt_cache_hit_tokens" in usage or "prompt_cache_miss_tokens" in usage:
        return "deepseek"
    if "is_byok" in usage or "cost_details" in usage:
        return "openrouter"
    rid = response.get("id")
    if isinstance(rid, str) and rid.startswith("gen-") and "provider" in response:
        return "openrouter"
    if "prompt_filter_results" in response:
        return "azure"
    if "num_sources_used" in usage or "cost_in_usd_ticks" in usage:
        return "xai"
    model = response.get("model")
    if isinstance(model, str) and model.startswith("grok-"):
        return "xai"
    return None
