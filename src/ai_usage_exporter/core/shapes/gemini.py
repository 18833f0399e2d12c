"""Gemini API and Vertex AI ``usageMetadata`` (google-genai ``GenerateContentResponseUsageMetadata``).

``promptTokenCount`` includes ``cachedContentTokenCount``. ``thoughtsTokenCount`` and
``toolUsePromptTokenCount`` are billed but counted apart from the candidates and the
prompt, so they are added to output and input. The ``*TokensDetails`` lists split each
count by modality; IMAGE output is priced many times text output, and DOCUMENT pages
are billed as image tokens. ``cacheTokensDetails`` splits ``cachedContentTokenCount``
the same way: a cached AUDIO token is priced at a cache rate of its own (e.g. $0.10 per
1M on gemini-2.5-flash against $1.00 uncached), so it is counted as both cached and
audio. VIDEO is counted apart since a few models (the Live ones) price it apart; on the
others it costs what text does; cached video is counted too, though no model prices it
apart yet, so that the uncached input is right. SDK dumps spell every key in snake_case; both are read.
``serviceTier`` names the tier; Vertex's ``trafficType`` names a provisioned or flex
tier when it is not ON_DEMAND.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.shapes._common import Counter, Reading, tier_value

MAP: tuple[tuple[str, str], ...] = (
    ("promptTokenCount + toolUsePromptTokenCount", "input_tokens"),
    ("candidatesTokenCount + thoughtsTokenCount", "output_tokens"),
    ("cachedContentTokenCount", "cached_input_tokens"),
    ("thoughtsTokenCount", "reasoning_tokens"),
    ("promptTokensDetails + toolUsePromptTokensDetails [AUDIO]", "audio_input_tokens"),
    ("promptTokensDetails + toolUsePromptTokensDetails [IMAGE, DOCUMENT]", "image_input_tokens"),
    ("promptTokensDetails + toolUsePromptTokensDetails [VIDEO]", "video_input_tokens"),
    ("cacheTokensDetails [AUDIO]", "cached_audio_input_tokens"),
    ("cacheTokensDetails [IMAGE, DOCUMENT]", "cached_image_input_tokens"),
    ("cacheTokensDetails [VIDEO]", "cached_video_input_tokens"),
    ("candidatesTokensDetails [AUDIO]", "audio_output_tokens"),
    ("candidatesTokensDetails [IMAGE, DOCUMENT]", "image_output_tokens"),
    ("candidatesTokensDetails [VIDEO]", "video_output_tokens"),
    ("serviceTier; trafficType (Vertex) when not ON_DEMAND", "service_tier"),
)

_SNAKE = {
    "promptTokenCount": "prompt_token_count",
    "candidatesTokenCount": "candidates_token_count",
    "totalTokenCount": "total_token_count",
    "cachedContentTokenCount": "cached_content_token_count",
    "thoughtsTokenCount": "thoughts_token_count",
    "toolUsePromptTokenCount": "tool_use_prompt_token_count",
    "promptTokensDetails": "prompt_tokens_details",
    "candidatesTokensDetails": "candidates_tokens_details",
    "toolUsePromptTokensDetails": "tool_use_prompt_tokens_details",
    "cacheTokensDetails": "cache_tokens_details",
    "trafficType": "traffic_type",
    "serviceTier": "service_tier",
}
KEYS = frozenset((*_SNAKE, *_SNAKE.values()))


def is_gemini(usage: Mapping[str, Any]) -> bool:
    return any(
        k in usage
        for k in (
            "promptTokenCount",
            "candidatesTokenCount",
            "totalTokenCount",
            "prompt_token_count",
            "candidates_token_count",
            "total_token_count",
        )
    )


def read(usage: Mapping[str, Any], count: Counter, provider: str | None, reading: Reading) -> None:
    def key(name: str) -> str:
        return name if name in usage else _SNAKE[name]

    def n(name: str) -> int:
        return count(usage, key(name))

    def mod(name: str, *modalities: str) -> int:
        k = key(name)
        return count.modality(usage.get(k), f"{count.where}.{k}", modalities)

    c = reading.counts
    thoughts = n("thoughtsTokenCount")
    c["input_tokens"] = n("promptTokenCount") + n("toolUsePromptTokenCount")
    c["output_tokens"] = n("candidatesTokenCount") + thoughts
    c["cached_input_tokens"] = n("cachedContentTokenCount")
    c["reasoning_tokens"] = thoughts
    c["audio_input_tokens"] = mod("promptTokensDetails", "AUDIO") + mod(
        "toolUsePromptTokensDetails", "AUDIO"
    )
    c["image_input_tokens"] = mod("promptTokensDetails", "IMAGE", "DOCUMENT") + mod(
        "toolUsePromptTokensDetails", "IMAGE", "DOCUMENT"
    )
    c["video_input_tokens"] = mod("promptTokensDetails", "VIDEO") + mod(
        "toolUsePromptTokensDetails", "VIDEO"
    )
    c["cached_audio_input_tokens"] = mod("cacheTokensDetails", "AUDIO")
    c["cached_image_input_tokens"] = mod("cacheTokensDetails", "IMAGE", "DOCUMENT")
    c["cached_video_input_tokens"] = mod("cacheTokensDetails", "VIDEO")
    c["audio_output_tokens"] = mod("candidatesTokensDetails", "AUDIO")
    c["image_output_tokens"] = mod("candidatesTokensDetails", "IMAGE", "DOCUMENT")
    c["video_output_tokens"] = mod("candidatesTokensDetails", "VIDEO")
    reading.service_tier = tier_value(usage.get(key("serviceTier")))
    traffic = usage.get(key("trafficType"))
    if isinstance(traffic, str) and traffic:
        tier = traffic.upper().rsplit(".", 1)[-1]
        if tier not in ("ON_DEMAND", "TRAFFIC_TYPE_UNSPECIFIED"):
            reading.service_tier = tier.lower()
