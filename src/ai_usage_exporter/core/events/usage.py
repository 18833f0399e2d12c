"""Token counts from an event's provider sources: `usage`, `response` and `stream`.

The per-provider mapping lives in `core.shapes`; this module picks the source an
event carries, folds a stream, and checks the subsets against their totals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ai_usage_exporter.core.events.model import DEFAULT_LIMITS, TOKEN_ALIASES, Limits, _string
from ai_usage_exporter.core.shapes import (
    STREAM_FORMATS,
    USAGE_FIELDS,
    Reading,
    StreamFolder,
    read_response,
    read_usage,
    usage_shape,
)
from ai_usage_exporter.core.shapes import Invalid as _Invalid
from ai_usage_exporter.core.shapes import describe as _describe
from ai_usage_exporter.core.shapes._common import CACHED_MODALITIES
from ai_usage_exporter.core.shapes.openai import provider_hint

# ---------------------------------------------------------------- provider shapes


def normalise_usage(
    usage: Mapping[str, Any],
    where: str = "usage",
    limits: Limits = DEFAULT_LIMITS,
    provider: str | None = None,
) -> dict[str, int]:
    """Map a provider's own usage object to our token and request counts.

    Anthropic and Bedrock report input without the cache counts, so they are added
    back; Gemini reports thoughts beside the candidates, so they are added to output;
    a provider that reports reasoning beside the completion (xAI) has it added to
    output. The mapping of each family lives in `ai_usage_exporter.shapes`.
    """
    return read_usage(usage, where, limits.max_tokens, provider).counts


@dataclass(slots=True)
class _Found:
    """What a provider object said besides its counts."""

    source: str = ""
    provider: str | None = None
    model: str | None = None
    duration_ms: float | None = None
    service_tier: str | None = None
    cost_usd: float | None = None


def _fill_from(found: _Found, kw: dict[str, Any], mine: list[_Invalid], limits: Limits) -> None:
    """What a provider object said fills only what the event left out."""
    for name, value in (("provider", found.provider), ("model", found.model)):
        if name not in kw and value is not None and not any(e.field == name for e in mine):
            try:
                kw[name] = _string(name, value, limits.max_label_length)
            except _Invalid as exc:
                mine.append(_Invalid(name, f"(from {found.source}) {exc.message}"))
    for name in ("provider", "model"):
        if name not in kw and not any(e.field == name for e in mine):
            hint = (
                "; it could not be told from the usage object's shape"
                if name == "provider" and found.source
                else ""
            )
            mine.append(_Invalid(name, f"is required{hint}"))
    if "duration_ms" not in kw and found.duration_ms is not None:
        kw["duration_ms"] = found.duration_ms
    if "service_tier" not in kw and found.service_tier is not None:
        kw["service_tier"] = found.service_tier
    if "provider_cost_usd" not in kw and found.cost_usd is not None:
        if found.cost_usd <= limits.max_cost_usd:
            kw["provider_cost_usd"] = found.cost_usd


def _source_counts(
    obj: Mapping[str, Any],
    flat: dict[str, int],
    sources: list[str],
    limits: Limits,
    provider: str | None,
    found: _Found,
) -> dict[str, int]:
    """The counts from `usage`, `usageMetadata`, `response` or `stream`.

    A provider's own object is mapped and, if inconsistent, clamped (never refused for
    its arithmetic); flat fields are checked strictly by `_flat_counts`.
    """
    if len(sources) > 1:
        raise _Invalid(
            sources[1],
            f"give one of usage, usageMetadata, response or stream, not {' and '.join(sources)}",
        )
    if flat:
        raise _Invalid(
            next(iter(flat)),
            f"give token counts either as flat fields or inside {sources[0]}, not both",
        )
    key = sources[0]
    container = obj[key]
    found.source = key
    if key == "stream":
        if not isinstance(container, list) or not all(isinstance(e, Mapping) for e in container):
            raise _Invalid(
                key,
                f"must be an array of decoded stream events (objects), got {_describe(container)}",
            )
        return _stream_counts(obj, container, limits, provider, found)
    if (
        key == "response"
        and isinstance(container, list)
        and container
        and all(isinstance(e, Mapping) for e in container)
        and _stream_format(container) == "gemini"
    ):
        # Gemini's streamGenerateContent without `alt=sse` answers with one JSON array
        # of the chunks: the whole body is the stream, so it is folded as one.
        return _stream_counts(obj, container, limits, provider, found)
    if not isinstance(container, Mapping):
        raise _Invalid(key, f"must be a JSON object, got {_describe(container)}")
    if key == "response":
        got = read_response(container, limits.max_tokens, provider)
        reading = got.reading
        found.provider = got.provider
        found.model = got.model
        found.duration_ms = got.duration_ms
    else:
        shape = "gemini" if key == "usageMetadata" else None
        reading = read_usage(container, key, limits.max_tokens, provider, shape)
        if provider is None:
            found.provider = _provider_of_usage(container)
    found.service_tier = reading.service_tier
    found.cost_usd = reading.cost_usd
    return reading.counts


def _flat_counts(obj: Mapping[str, Any], flat: dict[str, int]) -> dict[str, int]:
    """The counts from flat fields; a sub-count above its parent is the caller's mistake."""
    counts = dict.fromkeys(USAGE_FIELDS, 0)
    for name, value in flat.items():
        canonical = TOKEN_ALIASES.get(name)
        if canonical is not None:
            if canonical in flat:
                raise _Invalid(name, f"is an alias of {canonical}; give one of them, not both")
            name = canonical
        counts[name] = value
    total = obj.get("total_tokens")
    if total and not counts["input_tokens"] and not counts["output_tokens"]:
        raise _Invalid(
            "total_tokens",
            "cannot be split into input and output; send input_tokens and output_tokens",
        )
    _check_subsets(counts)
    return counts


def _stream_format(events: list[Mapping[str, Any]]) -> str | None:
    """The stream format a list of decoded events is in, told by the events' own keys."""
    for e in events:
        kind = e.get("type")
        if isinstance(kind, str):
            if kind.startswith("response."):
                return "openai_responses"
            if kind.startswith(("message_", "content_block_")):
                return "anthropic"
            if kind.startswith(("message-", "content-", "tool-call-", "tool-plan-", "citation-")):
                return "cohere"
        if e.get("object") == "chat.completion.chunk" or "choices" in e:
            return "openai_chat"
        if "usageMetadata" in e or "candidates" in e:
            return "gemini"
        if "done" in e and ("message" in e or "response" in e or "eval_count" in e):
            return "ollama"
        if any(k in e for k in ("messageStart", "contentBlockDelta", "messageStop", "metadata")):
            return "bedrock"
    return None


_FORMAT_PROVIDER = {
    "anthropic": "anthropic",
    "gemini": "google",
    "ollama": "ollama",
    "bedrock": "bedrock",
    "cohere": "cohere",
}


def _stream_counts(
    obj: Mapping[str, Any],
    events: list[Mapping[str, Any]],
    limits: Limits,
    provider: str | None,
    found: _Found,
) -> dict[str, int]:
    """Fold a streamed call's decoded events and map the usage object like a response's."""
    fmt = obj.get("stream_format")
    if fmt is None:
        fmt = _stream_format(events)
        if fmt is None:
            raise _Invalid(
                "stream_format",
                "is required: the stream's events do not tell their format; give one of "
                + ", ".join(STREAM_FORMATS),
            )
    if fmt not in STREAM_FORMATS:
        raise _Invalid(
            "stream_format", f"must be one of {', '.join(STREAM_FORMATS)}; got {_describe(fmt)}"
        )
    folder = StreamFolder(fmt)
    for event in events:
        folder.add(event)
    usage = folder.usage
    if usage is None:
        if not events:
            raise _Invalid("stream", "holds no events")
        # A stream that ended without a usage report (OpenAI Chat without
        # `stream_options.include_usage`, a failed Responses stream, a ConverseStream cut
        # before its metadata) is still a call: counted with no tokens, not refused.
        usage = {}
    hint: str | None = _FORMAT_PROVIDER.get(fmt)
    tier: str | None = None
    for event in events:
        if hint is None:
            hint = provider_hint(event)
        if isinstance(event.get("service_tier"), str):
            tier = event["service_tier"]
    if hint is None and fmt.startswith("openai"):
        hint = "openai"
    if usage:
        reading = read_usage(usage, "stream", limits.max_tokens, provider or hint)
    else:
        reading = Reading(notes=["stream: no usage reported; counted with 0 tokens"])
    found.provider = hint
    found.model = folder.model
    found.service_tier = reading.service_tier or (tier.lower() if tier else None)
    found.cost_usd = reading.cost_usd
    return reading.counts


def _provider_of_usage(usage: Mapping[str, Any]) -> str | None:
    """The provider a bare usage object's shape names unambiguously, if any."""
    from ai_usage_exporter.core.shapes import SHAPE_PROVIDER
    from ai_usage_exporter.core.shapes.openai import provider_hint

    shape = usage_shape(usage)
    if shape in SHAPE_PROVIDER:
        return SHAPE_PROVIDER[shape]
    return provider_hint({"usage": usage})


def _check_subsets(c: dict[str, int]) -> None:
    if c["cached_input_tokens"] + c["cache_write_tokens"] > c["input_tokens"]:
        raise _Invalid(
            "cached_input_tokens",
            f"cached_input_tokens ({c['cached_input_tokens']}) + cache_write_tokens "
            f"({c['cache_write_tokens']}) exceed input_tokens ({c['input_tokens']}); input_tokens "
            "must include them (send the provider's own usage object as `usage` to have it mapped)",
        )
    if c["cache_write_1h_tokens"] > c["cache_write_tokens"]:
        raise _Invalid(
            "cache_write_1h_tokens",
            f"cache_write_1h_tokens ({c['cache_write_1h_tokens']}) exceeds cache_write_tokens "
            f"({c['cache_write_tokens']}), which must include it",
        )
    for name in ("audio_input_tokens", "image_input_tokens", "video_input_tokens"):
        if c[name] > c["input_tokens"]:
            raise _Invalid(name, "exceeds input_tokens, which must include it")
    for name, parent in CACHED_MODALITIES.items():
        for whole in ("cached_input_tokens", parent):
            if c[name] > c[whole]:
                raise _Invalid(
                    name, f"{name} ({c[name]}) exceeds {whole} ({c[whole]}), which must include it"
                )
    if c["reasoning_tokens"] + c["audio_output_tokens"] > c["output_tokens"]:
        raise _Invalid(
            "reasoning_tokens",
            f"reasoning_tokens ({c['reasoning_tokens']}) + audio_output_tokens "
            f"({c['audio_output_tokens']}) exceed output_tokens ({c['output_tokens']}), "
            "which must include them",
        )
    for name in ("image_output_tokens", "video_output_tokens"):
        if c[name] > c["output_tokens"]:
            raise _Invalid(name, "exceeds output_tokens, which must include it")
