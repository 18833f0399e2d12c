"""The tables behind `ai-usage-exporter prices`: every rate kind the book resolves."""

from __future__ import annotations

from collections.abc import Sequence

from genai_prices import data_snapshot

from ai_usage_exporter.core.pricing.book import PriceBook, _join, _provider_id
from ai_usage_exporter.core.pricing.rates import Rates, genai_prices_version

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
