"""The price book: what one `UsageEvent` cost, split into input and output.

Precedence, first match wins:

1. the event's own ``cost_usd`` (source ``event``);
2. the bill the provider reported in its response, e.g. OpenRouter's ``usage.cost``
   (source ``provider``);
3. an override from the prices file or the ``prices:`` section of the config
   (source ``override``), matched on the deployment name first, then through an alias;
4. a self-hosted provider (``ollama``, ``vllm``, ``llamacpp``, ``lmstudio``, ``local``
   by default) costs 0 (source ``self-hosted``);
5. the price data bundled with genai-prices (source ``genai-prices``), looked up with the
   same rules as ``genai_prices.calc_price`` and at the event's timestamp;
6. otherwise 0, with source ``unpriced`` and one warning per (provider, model).

A priced call can still be priced only approximately; `Cost.reason` then says why:
``unpriced_token_type`` when it has tokens of a kind its price list has no rate for
(audio, image output, 1-hour cache writes, web searches; they are priced at their
parent's rate, as genai-prices does; a cached audio or image token when both the cache
read and the modality have rates of their own but their join has none), ``unknown_tier`` when it was served by a service
tier (flex, batch, priority...) with no price of its own (priced at the standard rate).
A tier's price can be given as an override keyed ``model@tier``. An unpriced call has
reason ``unknown_model``.

Overrides format (USD per 1M tokens; every key but ``input`` and ``output`` optional,
defaulting to the input or output rate)::

    self_hosted: [ollama, vllm, my-gpu-box]   # replaces the default list
    providers:
      openai:
        models:
          ft:gpt-4o-mini:acme:*:               # a model name or an fnmatch glob
            input: 0.30
            output: 1.20
            cached_input: 0.15
            cache_write: 0.30
            reasoning: 1.20
            audio_input: 3.00
            audio_output: 6.00
            cache_write_1h: 0.60
            image_input: 0.30
            image_output: 40.0
            cached_audio_input: 0.30           # a cache read of audio tokens
            cached_image_input: 0.03           # a cache read of image tokens
            video_input: 0.30
            video_output: 20.0
            cached_video_input: 0.03
            web_search: 10.0                   # USD per 1,000 searches
          gpt-4o-mini@flex:                    # the flex tier's price
            input: 0.075
            output: 0.30
      azure:
        aliases:
          prod-gpt4o-*: gpt-4o                 # priced as azure's gpt-4o
          eu-mini-*: {provider: openai, model: gpt-4o-mini}

A whole config file whose only key is ``prices`` is accepted too. Errors (unknown key,
negative or non-numeric price, an alias to an unknown model) raise `PriceConfigError`
naming the file and line. See docs/pricing.md.

The hot path resolves a model's rates once per (provider, model, price period) and
keeps them in a plain dict; after warm-up `PriceBook.price` is a dict lookup and a few
multiplications. genai-prices' own rules are reproduced for the token kinds an event
carries: tiers switch every rate to the tier's once total input tokens exceed the tier
start, and conditional prices (start dates, DeepSeek's off-peak hours) are chosen by
the event's timestamp, each time period getting its own cache entry.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import Any

import genai_prices
import yaml
from genai_prices import data_snapshot
from genai_prices import types as gp

from ai_usage_exporter.events import STANDARD_TIERS, UsageEvent

__all__ = (
    "DEFAULT_SELF_HOSTED",
    "Cost",
    "LineLoader",
    "PriceBook",
    "PriceConfigError",
    "Rates",
    "UNPRICED_REASONS",
    "describe_rates",
    "genai_prices_version",
    "genai_usage",
)

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


# ---------------------------------------------------------------- YAML with line numbers


class _LineDict(dict[Any, Any]):
    """A mapping loaded from YAML that remembers its own line and each key's line."""

    line: int | None = None
    key_lines: dict[Any, int]

    def __init__(self) -> None:
        super().__init__()
        self.key_lines = {}


class LineLoader(yaml.SafeLoader):
    """A SafeLoader whose mappings remember line numbers and reject duplicate keys.

    Load a config with it and pass its `prices:` mapping to `PriceBook` to get
    line-numbered errors: ``yaml.load(f, Loader=LineLoader)``.
    """


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    result = _LineDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, got {key!r}", key_node.start_mark
            ) from None
        if key in result:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {result.key_lines[key]})",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(path: str | os.PathLike[str]) -> Any:
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            return yaml.load(f, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
    except OSError as exc:
        raise PriceConfigError(f"{name}: cannot read the prices file: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise PriceConfigError(f"{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise PriceConfigError(f"{name}: {exc}") from None


# ---------------------------------------------------------------- overrides


@dataclass(frozen=True, slots=True)
class _Override:
    pattern: str  # lower case
    rates: Rates


@dataclass(frozen=True, slots=True)
class _Alias:
    pattern: str  # lower case
    provider: str | None  # None: the event's provider
    model: str
    where: str


@dataclass(slots=True)
class _Section:
    provider: str  # lower case, may be a glob
    overrides: list[_Override] = field(default_factory=list)
    aliases: list[_Alias] = field(default_factory=list)


class _Parser:
    """Validates an overrides mapping into sections, naming the source and line of each problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def where(self, parent: Mapping[Any, Any], key: object = None) -> str:
        line: int | None = None
        if isinstance(parent, _LineDict):
            line = parent.key_lines.get(key, parent.line) if key is not None else parent.line
        return f"{self.source}:{line}" if line is not None else self.source

    def fail(
        self, parent: Mapping[Any, Any], key: object, path: str, message: str
    ) -> PriceConfigError:
        return PriceConfigError(f"{self.where(parent, key)}: {path}: {message}")

    def mapping(self, parent: Mapping[Any, Any], key: object, path: str) -> Mapping[Any, Any]:
        value = parent[key]
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(parent, key, path, f"must be a mapping, got {_kind(value)}")
        return value

    def keys(self, obj: Mapping[Any, Any], allowed: Sequence[str], path: str) -> None:
        for key in obj:
            if key not in allowed:
                raise self.fail(
                    obj,
                    key,
                    f"{path}.{key}" if path else str(key),
                    f"unknown key {key!r}; expected one of {', '.join(allowed)}",
                )

    def name(self, parent: Mapping[Any, Any], key: object, path: str) -> str:
        if not isinstance(key, str) or not key.strip():
            raise self.fail(parent, key, path, f"a name must be non-empty text, got {key!r}")
        return key.strip()

    def parse(self, obj: Mapping[Any, Any]) -> tuple[list[_Section], list[str] | None]:
        if set(obj) == {"prices"} and isinstance(obj["prices"], Mapping):
            obj = obj["prices"]
        self.keys(obj, _TOP_KEYS, "")
        self_hosted: list[str] | None = None
        if "self_hosted" in obj:
            items = obj["self_hosted"]
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                raise self.fail(
                    obj,
                    "self_hosted",
                    "self_hosted",
                    f"must be a list of provider names, got {_kind(items)}",
                )
            self_hosted = [i.strip().lower() for i in items]
        sections: list[_Section] = []
        providers = self.mapping(obj, "providers", "providers") if "providers" in obj else {}
        for provider_key in providers:
            path = f"providers.{provider_key}"
            provider = self.name(providers, provider_key, path)
            body = self.mapping(providers, provider_key, path)
            self.keys(body, _PROVIDER_KEYS, path)
            section = _Section(provider.lower())
            models = self.mapping(body, "models", f"{path}.models") if "models" in body else {}
            for model_key in models:
                mpath = f"{path}.models.{model_key}"
                pattern = self.name(models, model_key, mpath)
                section.overrides.append(
                    _Override(pattern.lower(), self.rates(models, model_key, mpath, pattern))
                )
            aliases = self.mapping(body, "aliases", f"{path}.aliases") if "aliases" in body else {}
            for alias_key in aliases:
                section.aliases.append(
                    self.alias(aliases, alias_key, f"{path}.aliases.{alias_key}")
                )
            sections.append(section)
        return sections, self_hosted

    def rates(self, parent: Mapping[Any, Any], key: object, path: str, pattern: str) -> Rates:
        body = self.mapping(parent, key, path)
        self.keys(body, RATE_KEYS, path)
        values: dict[str, float] = {}
        for name in RATE_KEYS:
            if name not in body:
                continue
            value = body[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                hint = (
                    " (YAML reads 1e-3 as text; write 0.001 or 1.0e-3)"
                    if isinstance(value, str)
                    else ""
                )
                raise self.fail(
                    body,
                    name,
                    f"{path}.{name}",
                    f"must be a number of USD per 1M tokens, got {_kind(value)} {value!r}{hint}",
                )
            if not math.isfinite(value) or value < 0:
                raise self.fail(
                    body, name, f"{path}.{name}", f"must be a finite price >= 0, got {value}"
                )
            values[name] = float(value)
        for required in ("input", "output"):
            if required not in values:
                raise self.fail(parent, key, path, f"needs an {required} price (USD per 1M tokens)")
        return Rates(
            input=values["input"],
            output=values["output"],
            cached_input=values.get("cached_input", values["input"]),
            cache_write=values.get("cache_write", values["input"]),
            reasoning=values.get("reasoning", values["output"]),
            audio_input=values.get("audio_input", values["input"]),
            audio_output=values.get("audio_output", values["output"]),
            cache_write_1h=values.get("cache_write_1h"),
            image_input=values.get("image_input"),
            image_output=values.get("image_output"),
            web_search=values.get("web_search", 0.0) / 1000,
            cached_audio_input=values.get("cached_audio_input"),
            cached_image_input=values.get("cached_image_input"),
            video_input=values.get("video_input"),
            video_output=values.get("video_output"),
            cached_video_input=values.get("cached_video_input"),
            own=_own(values),
            kind="override",
            source=f"override {self.where(parent, key)} ({pattern})",
        )

    def alias(self, parent: Mapping[Any, Any], key: object, path: str) -> _Alias:
        pattern = self.name(parent, key, path)
        target = parent[key]
        provider: str | None = None
        if isinstance(target, Mapping):
            self.keys(target, _ALIAS_KEYS, path)
            model = target.get("model")
            if "provider" in target:
                provider = target["provider"]
                if not isinstance(provider, str) or not provider.strip():
                    raise self.fail(
                        target, "provider", f"{path}.provider", "must be a provider name"
                    )
                provider = provider.strip()
        else:
            model = target
        if not isinstance(model, str) or not model.strip():
            raise self.fail(
                parent,
                key,
                path,
                "must name a model, as `model-name` or {provider: p, model: m}; "
                f"got {_kind(model)}",
            )
        return _Alias(pattern.lower(), provider, model.strip(), self.where(parent, key))


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# ---------------------------------------------------------------- genai-prices


def _provider_id(provider: str) -> str:
    lowered = provider.lower()
    return PROVIDER_IDS.get(lowered, lowered)


def _genai_lookup(provider: str, model: str) -> tuple[gp.Provider, gp.ModelInfo] | None:
    """The provider and model `calc_price(provider_id=...)` would use, or None."""
    try:
        return data_snapshot.get_snapshot().find_provider_model(
            model, None, _provider_id(provider), None
        )
    except LookupError:
        return None


def _seconds_of_day(value: dtime) -> float:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    utc = datetime.combine(date(1970, 1, 1), aware).astimezone(UTC)
    return (utc.hour * 3600 + utc.minute * 60 + utc.second + utc.microsecond / 1e6) % _DAY


def _period(model: gp.ModelInfo, ts: float) -> tuple[float, float]:
    """The interval around `ts` in which the model's conditional prices do not change."""
    if isinstance(model.prices, gp.ModelPrice):
        return -_INF, _INF
    bounds: list[float] = []
    day = math.floor(ts / _DAY) * _DAY
    for conditional in model.prices:
        constraint = conditional.constraint
        if constraint is None:
            continue
        if isinstance(constraint, gp.StartDateConstraint):
            begins = constraint.start_date
            bounds.append(datetime(begins.year, begins.month, begins.day, tzinfo=UTC).timestamp())
        elif isinstance(constraint, gp.TimeOfDateConstraint):
            for edge in (constraint.start_time, constraint.end_time):
                offset = _seconds_of_day(edge)
                bounds.extend(day + d * _DAY + offset for d in (-1, 0, 1))
        else:  # a constraint this version does not know: cache one second at a time
            return math.floor(ts), math.floor(ts) + 1.0
    start = max((b for b in bounds if b <= ts), default=-_INF)
    end = min((b for b in bounds if b > ts), default=_INF)
    return start, end


_PRICE_KEYS: dict[str, str] = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cached_input": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "reasoning": "output_reasoning_mtok",
    "audio_input": "input_audio_mtok",
    "audio_output": "output_audio_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "image_input": "input_image_mtok",
    "image_output": "output_image_mtok",
    "cached_audio_input": "cache_audio_read_mtok",
    "cached_image_input": "cache_image_read_mtok",
    "video_input": "input_video_mtok",
    "video_output": "output_video_mtok",
    "cached_video_input": "cache_video_read_mtok",
}
# Each cached-modality rate: the modality whose cache read it prices.
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


_PARENT = {
    "cached_input": "input",
    "cache_write": "input",
    "audio_input": "input",
    "reasoning": "output",
    "audio_output": "output",
}


def _price_at(value: object, input_tokens: int) -> float | None:
    """genai-prices' `calc_unit_price` rule: the highest tier whose start input exceeds."""
    if value is None:
        return None
    if isinstance(value, gp.TieredPrices):
        price = value.base
        for tier in reversed(value.tiers):
            if input_tokens > tier.start:
                price = tier.price
                break
        return float(price)
    return float(value)  # type: ignore[arg-type]


def _compile(price: gp.ModelPrice, source: str) -> Rates:
    raw = {name: getattr(price, key, None) for name, key in _PRICE_KEYS.items()}
    raw["per_request"] = getattr(price, "requests_kcount", None)
    raw["web_search"] = getattr(price, "web_searches_kcount", None)
    starts = sorted(
        {t.start for v in raw.values() if isinstance(v, gp.TieredPrices) for t in v.tiers}
    )

    def at(input_tokens: int) -> Rates:
        values = {name: _price_at(v, input_tokens) for name, v in raw.items()}
        base = {name: values[name] or 0.0 for name in ("input", "output")}
        for name, parent in _PARENT.items():
            own = values[name]
            base[name] = base[parent] if own is None else own
        return Rates(
            input=base["input"],
            output=base["output"],
            cached_input=base["cached_input"],
            cache_write=base["cache_write"],
            reasoning=base["reasoning"],
            audio_input=base["audio_input"],
            audio_output=base["audio_output"],
            per_request=(values["per_request"] or 0.0) / 1000,
            cache_write_1h=values["cache_write_1h"],
            image_input=values["image_input"],
            image_output=values["image_output"],
            web_search=(values["web_search"] or 0.0) / 1000,
            cached_audio_input=values["cached_audio_input"],
            cached_image_input=values["cached_image_input"],
            video_input=values["video_input"],
            video_output=values["video_output"],
            cached_video_input=values["cached_video_input"],
            own=_own(values),
            source=source,
        )

    if all(v is None for v in raw.values()):
        source += "; priced only per non-token unit (audio hours, images...), which events lack"
    rates = at(0)
    if starts:
        tiers = tuple((start, at(start + 1)) for start in starts)
        rates = replace(rates, tiers=tiers, source=f"{source} (+tiers)")
    return rates


# ---------------------------------------------------------------- the book


# The hot path reads rates as flat tuples: unpacking one is far cheaper than reading
# attributes. Per 1M tokens: input, cached input, cache write, audio input, output,
# reasoning, audio output; then USD per request, the Cost source, the reason every cost
# from these rates is approximate ("" or unknown_tier) and the rarer kinds' `_Extra`.
# Most calls have none of the rarer kinds and never unpack it.
_Extra = tuple[
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    float,
    bool,
    bool,
    bool,
    bool,
    bool,
    bool,
    bool,
    bool,
]
_Flat = tuple[float, float, float, float, float, float, float, float, str, str, _Extra]
_Hot = tuple[_Flat, tuple[tuple[int, _Flat], ...]]  # tiers descending by start
_Period = tuple[float, float, Rates, _Hot]  # valid from, valid until (exclusive)


def _join(r: Rates, join: float | None, modality: float) -> float:
    """The rate of a cache read of audio or image tokens, as genai-prices prices it.

    genai-prices prices each token at its most specific priced kind: its own join rate
    when the price list has one (gemini-2.5-flash: cached audio $0.10 against $1.00), else
    the one parent priced apart (the cache read, or the modality), else input. A price
    list pricing both parents apart must price the join; an override that does not gets
    the cache-read rate, and the cost is marked approximate (`_own`).
    """
    if join is not None:
        return join
    return r.cached_input if "cached_input" in r.own else modality


def _flat(r: Rates) -> _Flat:
    own = r.own
    image_in = r.input if r.image_input is None else r.image_input
    # A cached audio, image or video token is counted at the cache-read rate and at the
    # modality's rate, and taken off the plain input twice: the deltas below turn that
    # into the rate it has.
    cached_audio = _join(r, r.cached_audio_input, r.audio_input)
    cached_image = _join(r, r.cached_image_input, image_in)
    video_in = r.input if r.video_input is None else r.video_input
    cached_video = _join(r, r.cached_video_input, video_in)
    # Per 1M tokens: 1h cache write, image input, image output; USD per web search; the
    # deltas of cached audio, image and video; video input, video output; and whether
    # audio in, audio out, 1h writes, image out, web searches and cached audio, image and
    # video lack a rate.
    extra: _Extra = (
        r.cache_write if r.cache_write_1h is None else r.cache_write_1h,
        image_in,
        r.output if r.image_output is None else r.image_output,
        r.web_search,
        cached_audio - r.cached_input - r.audio_input + r.input,
        cached_image - r.cached_input - image_in + r.input,
        cached_video - r.cached_input - video_in + r.input,
        video_in,
        r.output if r.video_output is None else r.video_output,
        "audio_input" not in own,
        "audio_output" not in own,
        "cache_write_1h" not in own,
        "image_output" not in own,
        "web_search" not in own,
        "cached_audio_input" not in own,
        "cached_image_input" not in own,
        "cached_video_input" not in own,
    )
    return (
        r.input,
        r.cached_input,
        r.cache_write,
        r.audio_input,
        r.output,
        r.reasoning,
        r.audio_output,
        r.per_request,
        r.kind,
        r.approx,
        extra,
    )


def _hot(rates: Rates) -> _Hot:
    return _flat(rates), tuple((start, _flat(tier)) for start, tier in reversed(rates.tiers))


# A frozen dataclass's __init__ sets each field through object.__setattr__, which takes
# ~850 ns for Cost on the reference machine: most of the 2 us budget. Setting the slots
# through their descriptors builds the identical object in half the time.
_new = object.__new__
_set_input = vars(Cost)["input"].__set__
_set_output = vars(Cost)["output"].__set__
_set_total = vars(Cost)["total"].__set__
_set_source = vars(Cost)["source"].__set__
_set_reason = vars(Cost)["reason"].__set__


def _cost(cost_in: float, cost_out: float, total: float, source: str, reason: str) -> Cost:
    cost: Cost = _new(Cost)
    _set_input(cost, cost_in)
    _set_output(cost, cost_out)
    _set_total(cost, total)
    _set_source(cost, source)
    _set_reason(cost, reason)
    return cost


_FREE = {
    "unpriced": Cost(0.0, 0.0, 0.0, "unpriced", "unknown_model"),
    "self-hosted": Cost(0.0, 0.0, 0.0, "self-hosted"),
}


class PriceBook:
    """Prices usage events: the event's cost, then overrides, self-hosted, genai-prices."""

    genai_prices_version: str = genai_prices_version

    def __init__(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        source: str = "<config>",
        self_hosted: Iterable[str] | None = None,
    ) -> None:
        self.source = source
        sections, file_self_hosted = _Parser(source).parse(overrides or {})
        self._sections = sections
        if self_hosted is not None:
            hosted = [p.strip().lower() for p in self_hosted]
        elif file_self_hosted is not None:
            hosted = file_self_hosted
        else:
            hosted = list(DEFAULT_SELF_HOSTED)
        self.self_hosted: frozenset[str] = frozenset(hosted)
        self._cache: dict[tuple[str, str], tuple[_Period, ...]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._canonical: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._check_aliases()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PriceBook:
        """Read a YAML prices file; errors name the file and line."""
        data = _load_yaml(path)
        name = os.fspath(path)
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise PriceConfigError(
                f"{name}:1: the prices file must be a mapping, got {_kind(data)}"
            )
        return cls(data, source=name)

    # -- hot path

    def price(self, event: UsageEvent) -> Cost:
        """What the event cost; thread-safe, and after warm-up a dict lookup and arithmetic."""
        ts = event.timestamp
        tier = event.service_tier
        if tier is None or tier in STANDARD_TIERS:
            key = (event.provider, event.model)
        else:
            key = (event.provider, f"{event.model}{_TIER_SEP}{tier}")
        hot = None
        periods = self._cache.get(key)
        if periods is not None:
            for start, end, _, found in periods:
                if start <= ts < end:
                    hot = found
                    break
        if hot is None:
            hot = self._resolve_cached(key, ts)[3]
        flat, tiers = hot
        if tiers:
            n = event.input_tokens
            for start_tokens, tier_rates in tiers:  # descending
                if n > start_tokens:
                    flat = tier_rates
                    break
        (
            r_in,
            r_cached,
            r_write,
            r_audio_in,
            r_out,
            r_reason,
            r_audio_out,
            fee,
            kind,
            reason,
            extra,
        ) = flat

        cached = event.cached_input_tokens
        write = event.cache_write_tokens
        audio_in = event.audio_input_tokens
        reasoning = event.reasoning_tokens
        audio_out = event.audio_output_tokens
        write_1h = event.cache_write_1h_tokens
        image_in = event.image_input_tokens
        image_out = event.image_output_tokens
        searches = event.web_search_requests
        video_in = event.video_input_tokens
        video_out = event.video_output_tokens
        plain_in = event.input_tokens - cached - write - audio_in
        plain_out = event.output_tokens - reasoning - audio_out
        cost_in = plain_in * r_in + cached * r_cached + write * r_write + audio_in * r_audio_in
        cost_out = reasoning * r_reason + audio_out * r_audio_out
        # Cached audio, image and video are parts of audio_in, image_in and video_in.
        if (
            write_1h
            or image_in
            or image_out
            or searches
            or audio_in
            or audio_out
            or video_in
            or video_out
        ):
            (
                r_write_1h,
                r_image_in,
                r_image_out,
                r_search,
                d_cached_audio,
                d_cached_image,
                d_cached_video,
                r_video_in,
                r_video_out,
                no_ai,
                no_ao,
                no_w1h,
                no_io,
                no_ws,
                no_ca,
                no_ci,
                no_cv,
            ) = extra
            cached_audio = event.cached_audio_input_tokens
            cached_image = event.cached_image_input_tokens
            cached_video = event.cached_video_input_tokens
            plain_in += cached_audio + cached_image + cached_video - image_in - video_in
            plain_out -= image_out + video_out
            cost_in += (
                write_1h * (r_write_1h - r_write)
                + image_in * (r_image_in - r_in)
                + video_in * (r_video_in - r_in)
                + cached_audio * d_cached_audio
                + cached_image * d_cached_image
                + cached_video * d_cached_video
                + searches * r_search * 1e6
            )
            cost_out += image_out * r_image_out + video_out * r_video_out
            if not reason and (
                (no_ai and audio_in)
                or (no_ao and audio_out)
                or (no_w1h and write_1h)
                or (no_io and image_out)
                or (no_ws and searches)
                or (no_ca and cached_audio)
                or (no_ci and cached_image)
                or (no_cv and cached_video)
            ):
                reason = "unpriced_token_type"
        # Inconsistent sub-counts (only hand-built events can have them) never go negative.
        if plain_in < 0:
            cost_in -= plain_in * r_in
        if plain_out < 0:
            plain_out = 0
        cost_in = cost_in / 1e6 + fee
        cost_out = (cost_out + plain_out * r_out) / 1e6

        given = event.cost_usd
        source = "event"
        if given is None:
            given = event.provider_cost_usd
            source = "provider"
        if given is not None:
            total = cost_in + cost_out
            if total > 0 and kind in _PRICED_KINDS:
                share = given * (cost_in / total)
                return _cost(share, given - share, given, source, "")
            return _cost(given, 0.0, given, source, "")
        if kind in _FREE:
            if kind == "unpriced" and key not in self._warned:
                self._warn_unpriced(key)
            return _FREE[kind]
        return _cost(cost_in, cost_out, cost_in + cost_out, kind, reason)

    # -- slow path

    def canonical_model(self, provider: str, model: str) -> str:
        """The one name reports give a model: a dated snapshot is its model.

        `gpt-4o-mini-2024-07-18` and `gpt-4o-mini` are one model to genai-prices, which
        prices both by the same entry; an alias of the overrides is its target. A model
        the book does not know, or one an override prices by its own name, keeps it.
        """
        key = (provider, model)
        found = self._canonical.get(key)
        if found is None:
            found = self._canonical[key] = self._canonical_uncached(provider, model)
        return found

    def _canonical_uncached(self, provider: str, model: str) -> str:
        if not model or self._override(provider, model) is not None:
            return model
        alias = self._alias(provider, model)
        if alias is not None:
            return self.canonical_model(alias.provider or provider, alias.model)
        if provider.lower() in self.self_hosted:
            return model
        hit = _genai_lookup(provider, model)
        return hit[1].id if hit is not None else model

    def rates(self, provider: str, model: str, timestamp: float | None = None) -> Rates | None:
        """The rates `price` uses for this model at this time (now if None); None if unpriced."""
        ts = time.time() if timestamp is None else timestamp
        rates = self._resolve_cached((provider, model), ts)[2]
        return None if rates.kind == "unpriced" else rates

    def _resolve_cached(self, key: tuple[str, str], ts: float) -> _Period:
        with self._lock:
            periods = self._cache.get(key, ())
            for period in periods:
                if period[0] <= ts < period[1]:
                    return period
            rates, start, end = self._resolve(key[0], key[1], ts)
            period = (start, end, rates, _hot(rates))
            if key not in self._cache and len(self._cache) >= _MAX_CACHED_MODELS:
                self._cache.clear()  # unbounded model names must not grow memory forever
            # Copy-on-write: readers iterate the old tuple without a lock.
            self._cache[key] = (period, *periods[: _MAX_PERIODS_PER_MODEL - 1])
            return period

    def _resolve(self, provider: str, model: str, ts: float) -> tuple[Rates, float, float]:
        base, sep, tier = model.partition(_TIER_SEP)
        if sep:
            # A tier's own price is an override keyed model@tier; without one the call is
            # priced at the standard rate and said to be approximate.
            found = self._override(provider, f"{base}@{tier}", tiered=True)
            if found is not None:
                return found, -_INF, _INF
            rates, start, end = self._resolve(provider, base, ts)
            if rates.kind in _PRICED_KINDS:
                rates = replace(
                    rates, approx="unknown_tier", source=f"{rates.source}; no {tier} tier price"
                )
            return rates, start, end
        found = self._override(provider, model)
        if found is not None:
            return found, -_INF, _INF
        alias = self._alias(provider, model)
        if alias is not None:
            target_provider = alias.provider or provider
            rates, start, end = self._resolve_direct(target_provider, alias.model, ts)
            if rates.kind != "unpriced":
                source = (
                    f"alias {alias.where} ({alias.pattern} -> {target_provider}/{alias.model}); "
                )
                return replace(rates, source=source + rates.source), start, end
            return rates, start, end
        return self._resolve_direct(provider, model, ts)

    def _resolve_direct(self, provider: str, model: str, ts: float) -> tuple[Rates, float, float]:
        found = self._override(provider, model)
        if found is not None:
            return found, -_INF, _INF
        if provider.lower() in self.self_hosted:
            return _SELF_HOSTED, -_INF, _INF
        hit = _genai_lookup(provider, model)
        if hit is None:
            return _UNPRICED, -_INF, _INF
        gp_provider, gp_model = hit
        start, end = _period(gp_model, ts)
        prices = gp_model.get_prices(datetime.fromtimestamp(ts, UTC))
        source = f"genai-prices {genai_prices_version} ({gp_provider.id}/{gp_model.id})"
        if not isinstance(gp_model.prices, gp.ModelPrice):
            source += f" at {datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M}Z"
        return _compile(prices, source), start, end

    def _sections_for(self, provider: str) -> Iterable[_Section]:
        lowered = provider.lower()
        yield from (s for s in self._sections if s.provider == lowered)
        yield from (
            s
            for s in self._sections
            if s.provider != lowered and fnmatch.fnmatchcase(lowered, s.provider)
        )

    def _override(self, provider: str, model: str, *, tiered: bool = False) -> Rates | None:
        lowered = model.lower()
        sections = list(self._sections_for(provider))
        for section in sections:  # an exact name beats any glob
            for entry in section.overrides:
                if entry.pattern == lowered:
                    return entry.rates
        for section in sections:
            for entry in section.overrides:
                # A tier's price comes only from a pattern that names a tier.
                if ("@" in entry.pattern or not tiered) and fnmatch.fnmatchcase(
                    lowered, entry.pattern
                ):
                    return entry.rates
        return None

    def _alias(self, provider: str, model: str) -> _Alias | None:
        lowered = model.lower()
        sections = list(self._sections_for(provider))
        for section in sections:
            for alias in section.aliases:
                if alias.pattern == lowered:
                    return alias
        for section in sections:
            for alias in section.aliases:
                if fnmatch.fnmatchcase(lowered, alias.pattern):
                    return alias
        return None

    def _check_aliases(self) -> None:
        now = time.time()
        for section in self._sections:
            for alias in section.aliases:
                provider = alias.provider or section.provider
                if alias.provider is None and _is_glob(section.provider):
                    continue  # the target's provider is only known per event
                rates, _, _ = self._resolve_direct(provider, alias.model, now)
                if rates.kind == "unpriced":
                    raise PriceConfigError(
                        f"{alias.where}: providers.{section.provider}.aliases.{alias.pattern}: "
                        f"the target {alias.model!r} is not a known model of provider {provider!r} "
                        f"in the overrides or in genai-prices {genai_prices_version}; "
                        "check the name with `ai-usage-exporter prices`"
                    )

    def _warn_unpriced(self, key: tuple[str, str]) -> None:
        with self._lock:
            if key in self._warned or len(self._warned) > _MAX_WARNED:
                return
            self._warned.add(key)
            if len(self._warned) > _MAX_WARNED:
                logger.warning("more than %d unpriced models; no further warnings", _MAX_WARNED)
                return
        logger.warning(
            "no price for provider %r model %r; recording cost 0 with source 'unpriced'. "
            "Add an override to the prices file, or upgrade genai-prices",
            key[0],
            key[1].partition(_TIER_SEP)[0],
        )

    # -- for describe_rates

    def _override_patterns(self, provider: str | None) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for section in self._sections:
            if provider is None or fnmatch.fnmatchcase(provider.lower(), section.provider):
                out.extend((section.provider, o.pattern) for o in section.overrides)
                out.extend((section.provider, a.pattern) for a in section.aliases)
        return out


# ---------------------------------------------------------------- describe


# (column, rate kind): the first seven always show; the others only when a listed model
# or tier prices that kind apart, so a table of text models stays narrow.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("input", "input"),
    ("cached_in", "cached_input"),
    ("cache_wr", "cache_write"),
    ("output", "output"),
    ("reasoning", "reasoning"),
    ("audio_in", "audio_input"),
    ("audio_out", "audio_output"),
    ("cache_wr_1h", "cache_write_1h"),
    ("image_in", "image_input"),
    ("image_out", "image_output"),
    ("video_in", "video_input"),
    ("video_out", "video_output"),
    ("cached_audio", "cached_audio_input"),
    ("cached_image", "cached_image_input"),
    ("cached_video", "cached_video_input"),
    ("search_1k", "web_search"),
)
_ALWAYS = 7
_DERIVED = "*"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _resolved(r: Rates) -> dict[str, tuple[float, bool]]:
    """Each rate kind's rate as `price` applies it, and whether the price list gives it."""
    free = r.kind == "self-hosted"
    own = r.own

    def opt(value: float | None, parent: float) -> tuple[float, bool]:
        return (parent, free) if value is None else (value, True)

    image_in = opt(r.image_input, r.input)
    video_in = opt(r.video_input, r.input)
    return {
        "input": (r.input, True),
        "output": (r.output, True),
        "cached_input": (r.cached_input, free or "cached_input" in own),
        "cache_write": (r.cache_write, free or "cache_write" in own),
        "reasoning": (r.reasoning, free or "reasoning" in own),
        "audio_input": (r.audio_input, free or "audio_input" in own),
        "audio_output": (r.audio_output, free or "audio_output" in own),
        "cache_write_1h": opt(r.cache_write_1h, r.cache_write),
        "image_input": image_in,
        "image_output": opt(r.image_output, r.output),
        "video_input": video_in,
        "video_output": opt(r.video_output, r.output),
        "cached_audio_input": opt(r.cached_audio_input, _join(r, None, r.audio_input)),
        "cached_image_input": opt(r.cached_image_input, _join(r, None, image_in[0])),
        "cached_video_input": opt(r.cached_video_input, _join(r, None, video_in[0])),
        # USD per 1,000 searches, the unit price lists and override files use
        "web_search": (r.web_search * 1000, free or "web_search" in own),
    }


def _cells(r: Rates, kinds: Sequence[str]) -> list[str]:
    resolved = _resolved(r)
    return [_fmt(resolved[k][0]) + ("" if resolved[k][1] else _DERIVED) for k in kinds]


def _rows(provider: str, model: str, rates: Rates | None, kinds: Sequence[str]) -> list[list[str]]:
    if rates is None:
        return [[provider, model, *(["-"] * len(kinds)), "unpriced"]]
    source = rates.source
    if rates.per_request:
        source += f"; +${rates.per_request:g}/request"
    rows = [[provider, model, *_cells(rates, kinds), source]]
    for start, tier in rates.tiers:
        rows.append(["", f"  > {start} input tokens", *_cells(tier, kinds), "tier"])
    return rows


def _shown(listed: Sequence[Rates]) -> list[tuple[str, str]]:
    """The columns to print: the usual seven, and each rarer kind some listed rate gives."""
    every = [t for r in listed for t in (r, *(tier for _, tier in r.tiers))]
    shown = list(_COLUMNS[:_ALWAYS])
    for column, kind in _COLUMNS[_ALWAYS:]:
        if any(r.kind != "self-hosted" and _resolved(r)[kind][1] for r in every):
            shown.append((column, kind))
    return shown


def rate_pairs(
    book: PriceBook, provider: str | None, models: Sequence[str]
) -> list[tuple[str, str]]:
    """The (provider, model) pairs `prices` lists; provider "?" when none is known."""
    pairs: list[tuple[str, str]] = []
    if models:
        for model in models:
            if provider is not None:
                pairs.append((provider, model))
                continue
            try:  # genai-prices' own rule for a model given without a provider
                found = data_snapshot.get_snapshot().find_provider(model.lower(), None, None)
            except LookupError:
                pairs.append(("?", model))
            else:
                pairs.append((found.id, model))
    elif provider is not None:
        pairs.extend(book._override_patterns(provider))
        hit = None
        try:
            hit = data_snapshot.get_snapshot().find_provider(None, _provider_id(provider), None)
        except LookupError:
            pass
        if hit is not None:
            pairs.extend((provider, m.id) for m in hit.models)
    else:
        pairs.extend(book._override_patterns(None))
    return pairs


def describe_rates(
    book: PriceBook,
    provider: str | None,
    models: Sequence[str],
    pairs: list[tuple[str, str]] | None = None,
) -> str:
    """A table of resolved USD-per-1M-token rates and where each came from."""
    if pairs is None:
        pairs = rate_pairs(book, provider, models)
    resolved = [(p, m, book.rates(p, m) if p != "?" else None) for p, m in pairs]
    shown = _shown([r for _, _, r in resolved if r is not None])
    kinds = [kind for _, kind in shown]
    rows = [["provider", "model", *(column for column, _ in shown), "source"]]
    for p, m, rates in resolved:
        rows.extend(_rows(p, m, rates, kinds))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    header = (
        f"USD per 1M tokens (search_1k: per 1,000 web searches); "
        f"genai-prices {genai_prices_version}; "
        f"self-hosted: {', '.join(sorted(book.self_hosted)) or 'none'}\n"
        f"{_DERIVED}: no rate of its own in the source; the rate of the kind it falls back to "
        "(see docs/pricing.md)"
    )
    if not pairs:
        lines.append("(no overrides; give --provider P or model names to list genai-prices rates)")
    return "\n".join([header, *lines])
