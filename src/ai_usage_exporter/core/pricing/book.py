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
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import Any

from genai_prices import data_snapshot
from genai_prices import types as gp

from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.pricing.overrides import (
    _Alias,
    _is_glob,
    _kind,
    _load_yaml,
    _Parser,
    _Section,
)
from ai_usage_exporter.core.pricing.rates import (
    _DAY,
    _INF,
    _MAX_CACHED_MODELS,
    _MAX_PERIODS_PER_MODEL,
    _MAX_WARNED,
    _PRICED_KINDS,
    _SELF_HOSTED,
    _TIER_SEP,
    _UNPRICED,
    DEFAULT_SELF_HOSTED,
    PROVIDER_IDS,
    Cost,
    PriceConfigError,
    Rates,
    _own,
    genai_prices_version,
    logger,
)
from ai_usage_exporter.core.shapes import STANDARD_TIERS

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
