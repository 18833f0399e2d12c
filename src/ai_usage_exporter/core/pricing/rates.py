"""Rates and costs: what a model charges per token kind, and what one event cost."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import genai_prices

from ai_usage_exporter.core.events.model import UsageEvent

logger = logging.getLogger("ai_usage_exporter.pricing")

genai_prices_version: str = genai_prices.__version__

DEFAULT_SELF_HOSTED: tuple[str, ...] = ("ollama", "vllm", "llamacpp", "lmstudio", "local")

# Our provider names that genai-prices does not already recognise by id or by its own
# provider_match rules (which cover bedrock/amazon -> aws, vertex/gemini -> google, xai).
PROVIDER_IDS: dict[str, str] = {
    "azure_openai": "azure",
    "azure-openai": "azure",
    "azure_ai": "azure",
    "bedrock": "aws",
    "vertex": "google",
    "vertex_ai": "google",
    "gemini": "google",
    "google_genai": "google",
    "xai": "x-ai",
    "grok": "x-ai",
    "fireworks_ai": "fireworks",
    "fireworks-ai": "fireworks",
    "together_ai": "together",
    "mistralai": "mistral",
    "moonshot": "moonshotai",
}

RATE_KEYS: tuple[str, ...] = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "reasoning",
    "audio_input",
    "audio_output",
    "cache_write_1h",
    "image_input",
    "image_output",
    "cached_audio_input",
    "cached_image_input",
    "video_input",
    "video_output",
    "cached_video_input",
    "web_search",
)
# Kinds billed at a rate of their own at many providers; tokens of one of these priced
# at a parent's rate (because the price list has none) make the cost approximate.
# A cached audio or image token is approximate only when the cache read and the modality
# both have rates of their own and their join has none (see `_join`).
_DISTINCT = (
    "audio_input",
    "audio_output",
    "cache_write_1h",
    "image_output",
    "web_search",
    "cached_audio_input",
    "cached_image_input",
    "cached_video_input",
)
UNPRICED_REASONS: tuple[str, ...] = ("unknown_model", "unpriced_token_type", "unknown_tier")
_PROVIDER_KEYS = ("models", "aliases")
_TOP_KEYS = ("self_hosted", "providers")
_ALIAS_KEYS = ("model", "provider")

_MAX_CACHED_MODELS = 10_000
# Joins model and tier in a cache key; "@" cannot be used, Vertex model names hold it.
_TIER_SEP = "\x1f"
_MAX_PERIODS_PER_MODEL = 8
_MAX_WARNED = 10_000
_DAY = 86_400.0
_INF = math.inf


class PriceConfigError(ValueError):
    """A prices file or `prices:` section is wrong; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Cost:
    """What one event cost in USD, and where the price came from."""

    input: float
    output: float
    total: float
    source: str  # "event" | "provider" | "override" | "genai-prices" | "self-hosted" | "unpriced"
    # "" when fully priced, else one of UNPRICED_REASONS
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Rates:
    """Resolved USD prices per 1M tokens for one model in one price period.

    Every rate is the one that applies: a kind the price list does not distinguish
    carries its parent's rate (cached input at the input rate, reasoning at the output
    rate). `tiers` holds (start, rates) pairs, ascending: when an event's input tokens
    exceed `start`, that tier's rates apply to all of its tokens.
    """

    input: float
    output: float
    cached_input: float
    cache_write: float
    reasoning: float
    audio_input: float
    audio_output: float
    per_request: float = 0.0  # USD per request, counted as input
    tiers: tuple[tuple[int, Rates], ...] = ()
    cache_write_1h: float | None = None  # None: the cache_write rate
    image_input: float | None = None  # None: the input rate
    image_output: float | None = None  # None: the output rate
    web_search: float = 0.0  # USD per search, counted as input
    # A cache read of audio or image tokens; None: the rate genai-prices' leaf rule gives
    # (see `_join`).
    cached_audio_input: float | None = None
    cached_image_input: float | None = None
    video_input: float | None = None  # None: the input rate
    video_output: float | None = None  # None: the output rate
    cached_video_input: float | None = None  # as cached_audio_input
    # Which of _DISTINCT (and cached_input) the price list gives a rate of its own.
    own: frozenset[str] = frozenset()
    approx: str = ""  # a reason every cost from these rates is approximate (unknown_tier)
    kind: str = "genai-prices"  # the Cost.source it produces
    source: str = ""  # where it came from, for people: file and line, alias, version


def _zero(kind: str) -> Rates:
    # Free: no kind of token is "unpriced" at a zero rate.
    return Rates(
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, own=frozenset(_DISTINCT), kind=kind, source=kind
    )


_UNPRICED = _zero("unpriced")
_SELF_HOSTED = _zero("self-hosted")
_PRICED_KINDS = frozenset(("override", "genai-prices"))


def genai_usage(event: UsageEvent) -> genai_prices.Usage:
    """The event's counts as genai-prices' `Usage`, for comparing with `calc_price`.

    Both count cache reads and writes inside input tokens, and audio inside input or
    output, so the fields map one to one.
    """
    return genai_prices.Usage(
        input_tokens=event.input_tokens,
        cache_read_tokens=event.cached_input_tokens,
        cache_write_tokens=event.cache_write_tokens,
        cache_write_1h_tokens=event.cache_write_1h_tokens,
        input_audio_tokens=event.audio_input_tokens,
        input_image_tokens=event.image_input_tokens,
        output_tokens=event.output_tokens,
        output_reasoning_tokens=event.reasoning_tokens,
        output_audio_tokens=event.audio_output_tokens,
        output_image_tokens=event.image_output_tokens,
        cache_audio_read_tokens=event.cached_audio_input_tokens,
        cache_image_read_tokens=event.cached_image_input_tokens,
        input_video_tokens=event.video_input_tokens,
        output_video_tokens=event.video_output_tokens,
        cache_video_read_tokens=event.cached_video_input_tokens,
        web_searches=event.web_search_requests,
    )


_CACHED_JOINS = {
    "cached_audio_input": "audio_input",
    "cached_image_input": "image_input",
    "cached_video_input": "video_input",
}


def _own(values: Mapping[str, float | None]) -> frozenset[str]:
    """Which of _DISTINCT a price list prices exactly (a cache-read join: see `_join`)."""
    own = {
        k
        for k in (*_DISTINCT, "cached_input", "cache_write", "reasoning")
        if values.get(k) is not None
    }
    for join, modality in _CACHED_JOINS.items():
        if values.get("cached_input") is None or values.get(modality) is None:
            own.add(join)  # at most one parent is priced apart: its rate is exact
    return frozenset(own)
