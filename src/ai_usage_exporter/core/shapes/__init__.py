"""Provider usage shapes: one module per family maps its usage object to our counts.

Everything here is pure. `read_usage` names the shape of a usage object by its keys,
maps it with that family's module and settles the counts (a sub-count never exceeds
its parent; a provider's own object is clamped and noted, never refused).
`read_response` does the same for a whole response body, and also finds the model,
the provider, the tier and a duration when the body says them.

Families: `openai` (Chat Completions and Responses, and every provider that copies
them), `anthropic`, `gemini` (Gemini API and Vertex AI), `bedrock` (Converse),
`ollama` (native API) and `cohere` (Chat v1 and v2). Each module's ``MAP`` lists where
each count comes from; the README's provider table is checked against them. `streams` folds a streamed call's
events into the usage object the same call returns unstreamed; `sse` parses SSE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ai_usage_exporter.core.shapes import anthropic, bedrock, cohere, gemini, ollama, openai
from ai_usage_exporter.core.shapes._common import (
    COUNT_FIELDS,
    STANDARD_TIERS,
    TOKEN_FIELDS,
    USAGE_FIELDS,
    Counter,
    Invalid,
    Reading,
    check_int,
    describe,
    settle,
    tier_value,
)
from ai_usage_exporter.core.shapes.streams import STREAM_FORMATS, StreamFolder, fold_stream

__all__ = (
    "COUNT_FIELDS",
    "MAPS",
    "STANDARD_TIERS",
    "STREAM_FORMATS",
    "TOKEN_FIELDS",
    "USAGE_FIELDS",
    "Invalid",
    "Reading",
    "ResponseReading",
    "StreamFolder",
    "check_int",
    "describe",
    "fold_stream",
    "infer_provider",
    "normalise_usage",
    "read_response",
    "read_usage",
    "usage_shape",
)

DEFAULT_MAX_TOKENS = 100_000_000

# shape -> (family module's reader, its mapping table)
MAPS: dict[str, tuple[tuple[str, str], ...]] = {
    "openai_chat": openai.CHAT_MAP,
    "openai_responses": openai.RESPONSES_MAP,
    "anthropic": anthropic.MAP,
    "gemini": gemini.MAP,
    "bedrock": bedrock.MAP,
    "ollama": ollama.MAP,
    "cohere": cohere.MAP,
}

# The provider a shape alone identifies; the OpenAI shapes are shared by many providers.
SHAPE_PROVIDER: dict[str, str] = {
    "anthropic": "anthropic",
    "gemini": "google",
    "bedrock": "bedrock",
    "ollama": "ollama",
    "cohere": "cohere",
}


def usage_shape(usage: Mapping[str, Any]) -> str:
    """Name the provider shape of a usage object by its keys."""
    if gemini.is_gemini(usage):
        return "gemini"
    if bedrock.is_bedrock(usage):
        return "bedrock"
    if ollama.is_ollama(usage):
        return "ollama"
    if cohere.is_cohere(usage):
        return "cohere"
    if openai.is_chat(usage):
        return "openai_chat"
    if anthropic.is_anthropic(usage):
        return "anthropic"
    if "input_tokens" in usage or "output_tokens" in usage:
        # Anthropic without cache fields looks like Responses; the mapping is the same.
        return "openai_responses"
    return "unknown"


_READERS = {
    "openai_chat": openai.read_chat,
    "openai_responses": openai.read_responses,
    "anthropic": anthropic.read,
    "gemini": gemini.read,
    "bedrock": bedrock.read,
    "ollama": ollama.read,
    "cohere": cohere.read,
}


def read_usage(
    usage: Mapping[str, Any],
    where: str = "usage",
    max_tokens: int = DEFAULT_MAX_TOKENS,
    provider: str | None = None,
    shape: str | None = None,
) -> Reading:
    """Map a provider's own usage object to our counts, its billed cost and its tier.

    `shape` is the family the object's place already names (a Gemini `usageMetadata`),
    used when its keys do not: Gemini sends one with no counts for a blocked prompt.
    """
    found = usage_shape(usage)
    if found != "unknown" or shape is None:
        shape = found
    if shape == "unknown":
        keys = ", ".join(sorted(str(k) for k in usage)[:10]) or "none"
        raise Invalid(
            where,
            "has no token counts in a known provider shape (OpenAI, Anthropic, Gemini, "
            f"Bedrock, Ollama, Cohere); its keys: {keys}",
        )
    if (
        shape == "openai_responses"
        and provider is not None
        and provider.lower() in ("anthropic", "claude")
    ):
        shape = "anthropic"
    reading = Reading()
    _READERS[shape](usage, Counter(where, max_tokens), provider, reading)
    return settle(reading, where)


def normalise_usage(
    usage: Mapping[str, Any],
    where: str = "usage",
    limits: Any = None,
    provider: str | None = None,
) -> dict[str, int]:
    """Map a provider's own usage object to our token and request counts.

    Anthropic and Bedrock report input without the cache counts, so they are added
    back; Gemini reports thoughts beside the candidates, so they are added to output.
    Keys a provider adds that carry no tokens (timings, service tier) are ignored.
    `limits` is an `events.Limits` (its ``max_tokens`` bounds each count).
    """
    max_tokens = getattr(limits, "max_tokens", DEFAULT_MAX_TOKENS)
    return read_usage(usage, where, max_tokens, provider).counts


@dataclass(slots=True)
class ResponseReading:
    """What a whole response body says besides its counts."""

    reading: Reading
    provider: str | None = None  # inferred from the body's shape, when unambiguous
    model: str | None = None
    duration_ms: float | None = None


def infer_provider(response: Mapping[str, Any]) -> str | None:
    """The provider a whole response body comes from, or None when it is ambiguous."""
    if response.get("type") == "message" and response.get("role") == "assistant":
        return "anthropic"
    if any(k in response for k in ("usageMetadata", "usage_metadata", "modelVersion")):
        return "google"
    output = response.get("output")
    if (
        (isinstance(output, Mapping) and "message" in output)
        or isinstance(response.get("metrics"), Mapping)
        and "latencyMs" in response["metrics"]
    ):
        return "bedrock"
    if "done" in response and ("eval_count" in response or "prompt_eval_count" in response):
        return "ollama"
    if any(isinstance(response.get(k), Mapping) and cohere.is_cohere(response[k])
           for k in ("usage", "meta")):  # fmt: skip
        return "cohere"
    hint = openai.provider_hint(response)
    if hint is not None:
        return hint
    if response.get("object") in (
        "chat.completion",
        "response",
        "chat.completion.chunk",
        "text_completion",
    ):
        return "openai"
    return None


def _usage_of(response: Mapping[str, Any]) -> tuple[Mapping[str, Any], str] | None:
    for key in ("usage", "usageMetadata", "usage_metadata"):
        inner = response.get(key)
        if isinstance(inner, Mapping):
            return inner, f"response.{key}"
    if ollama.is_ollama(response):
        return response, "response"
    meta = response.get("meta")  # Cohere's v1 Chat
    if isinstance(meta, Mapping) and cohere.is_cohere(meta):
        return meta, "response.meta"
    return None


# Keys only a provider's own response body has; one of them and no usage is a real call
# that reported none (a background Responses job still queued, a failed call).
_RESPONSE_KEYS = ("choices", "candidates", "output", "promptFeedback", "content")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if 0 <= number < float("inf") else None


def read_response(
    response: Mapping[str, Any],
    max_tokens: int = DEFAULT_MAX_TOKENS,
    provider: str | None = None,
) -> ResponseReading:
    """Counts, model, provider, tier and duration from a provider's whole response."""
    inferred = infer_provider(response)
    found = _usage_of(response)
    if found is not None:
        usage, where = found
        shape = "gemini" if where.endswith(("usageMetadata", "usage_metadata")) else None
        reading = read_usage(usage, where, max_tokens, provider or inferred, shape)
    elif inferred is not None or any(k in response for k in _RESPONSE_KEYS):
        # The call happened and the provider said nothing of its tokens: it is counted,
        # with no tokens, rather than refused (a refusal would lose the call itself).
        reading = Reading(notes=["response: no usage reported; counted with 0 tokens"])
    else:
        raise Invalid("response", "holds no usage object (usage, usageMetadata or Ollama counts)")
    out = ResponseReading(reading, provider=inferred)
    model = response.get("model")
    if model is None:
        model = response.get("modelVersion", response.get("model_version"))
    if model is None:
        model = response.get("modelId")
    if isinstance(model, str) and model:
        out.model = model
    if reading.service_tier is None:
        tier = response.get("service_tier", response.get("serviceTier"))
        reading.service_tier = tier_value(tier)
    total_ns = _number(response.get("total_duration"))
    if total_ns is not None and ollama.is_ollama(response):
        out.duration_ms = total_ns / 1e6
    metrics = response.get("metrics")
    if isinstance(metrics, Mapping):
        latency = _number(metrics.get("latencyMs"))
        if latency is not None:
            out.duration_ms = latency
    return out
