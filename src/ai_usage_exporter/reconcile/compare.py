"""What the ledger recorded against what the provider billed, per closed UTC day (pure).

Per day, provider and model (a model's aliases and dated snapshots are one model,
matched through the price book), billed dollars and tokens of each kind against
the ledger's day buckets, the capture ratio (recorded / billed) and the flags
that tell the two causes of a gap apart:

- `untracked_spend`: the provider billed tokens the ledger never saw (more than 1%
  of a kind missing): a caller bypassing the sidecar, a leaked key.
- `over_recorded`: the ledger holds more tokens than were billed (counted twice?).
- `price_drift`: tokens agree within 1% but dollars do not: a price-book rate is
  wrong. The rates that differ are named, billed against price book, per 1M tokens.
- `not_final`: the provider may still restate the day.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ai_usage_exporter.core.pricing.rates import Rates
from ai_usage_exporter.ledger.provider_usage import ProviderUsage
from ai_usage_exporter.reconcile._parse import DAY, NANO

TOKEN_KEYS: tuple[str, ...] = ("input", "output", "cached_input", "cache_write")
# The ledger's bucket columns the comparison reads, in this order.
RECORDED_VALUES: tuple[str, ...] = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cost_total_nusd",
)
# Billing kind -> the comparison's token keys it adds to (input counts every input
# token, cache reads and writes included, as the event's input_tokens does).
_ADDS_TO: dict[str, tuple[str, ...]] = {
    "uncached_input": ("input",),
    "cached_input": ("input", "cached_input"),
    "cache_write_5m": ("input", "cache_write"),
    "cache_write_1h": ("input", "cache_write"),
    "audio_input": ("input",),
    "image_input": ("input",),
    "output": ("output",),
    "audio_output": ("output",),
    "image_output": ("output",),
}
TOLERANCE = 0.01  # tokens "agree" within 1%; dollars too
MIN_DRIFT_NUSD = 1_000_000  # $0.001: below it a dollar gap is rounding, never drift
NO_MODEL = "(no model)"
FLAGS: tuple[str, ...] = ("untracked_spend", "over_recorded", "price_drift", "not_final")

Identity = Callable[[str, str], str]
RatesOf = Callable[[str, str, float], "Rates | None"]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One day bucket sum of the ledger: day, provider, model and RECORDED_VALUES."""

    day: int
    provider: str
    model: str
    values: Sequence[int]


def _rate(rates: Rates, kind: str) -> float | None:
    """The price book's USD per 1M tokens (per search for web_search) for a billing kind."""
    return {
        "uncached_input": rates.input,
        "cached_input": rates.cached_input,
        "cache_write_5m": rates.cache_write,
        "cache_write_1h": rates.cache_write_1h
        if rates.cache_write_1h is not None
        else rates.cache_write,
        "audio_input": rates.audio_input,
        "audio_output": rates.audio_output,
        "output": rates.output,
        "image_input": rates.image_input if rates.image_input is not None else rates.input,
        "image_output": rates.image_output if rates.image_output is not None else rates.output,
        "web_search": rates.web_search,
    }.get(kind)


def _apart(a: float, b: float) -> bool:
    return abs(a - b) > TOLERANCE * max(abs(a), abs(b))


def compare(
    provider: str,
    billed: Iterable[ProviderUsage],
    fetched_days: Mapping[tuple[int, str], bool],
    scopes: Sequence[str],
    recorded: Iterable[Recorded],
    identity: Identity,
    rates_of: RatesOf,
) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows of one provider's days the fetch covered, and the days it did not.

    `scopes` are the scopes the comparison covers (["" ] organization-wide); only
    billed rows of those count. `recorded` holds the ledger's buckets of this
    provider; days no fetch covered are returned apart, never compared.
    """
    wanted = set(scopes)
    # A model name's identity is looked up once per comparison, not once per row.
    identity = functools.cache(identity)
    covered: dict[int, bool] = {}
    for (day, scope), final in fetched_days.items():
        if scope in wanted:
            covered[day] = covered.get(day, True) and final
    # (day, model identity) -> billed: kind -> [quantity, cost]; and the names seen.
    bills: dict[tuple[int, str], dict[str, list[int]]] = {}
    names: dict[tuple[int, str], tuple[set[str], set[str]]] = {}
    for b in billed:
        if b.scope not in wanted or b.day not in covered:
            continue
        ident = identity(provider, b.model) if b.model else NO_MODEL
        kinds = bills.setdefault((b.day, ident), {})
        acc = kinds.setdefault(b.kind, [0, 0])
        acc[0] += b.quantity
        acc[1] += b.cost_nusd
        if b.model:
            names.setdefault((b.day, ident), (set(), set()))[0].add(b.model)
    recs: dict[tuple[int, str], list[int]] = {}
    not_fetched: set[int] = set()
    for r in recorded:
        if r.day not in covered:
            not_fetched.add(r.day)
            continue
        ident = identity(provider, r.model)
        acc2 = recs.setdefault((r.day, ident), [0] * len(RECORDED_VALUES))
        for i, v in enumerate(r.values):
            acc2[i] += v
        names.setdefault((r.day, ident), (set(), set()))[1].add(r.model)
    rows = []
    for key in sorted({*bills, *recs}):
        day, ident = key
        billed_names, recorded_names = names.get(key, (set(), set()))
        rows.append(
            _row(
                provider,
                day,
                ident,
                bills.get(key, {}),
                recs.get(key, [0] * len(RECORDED_VALUES)),
                sorted(billed_names),
                sorted(recorded_names),
                not covered[day],
                rates_of,
            )
        )
    return rows, sorted(not_fetched)


def _row(
    provider: str,
    day: int,
    model: str,
    kinds: Mapping[str, list[int]],
    rec: Sequence[int],
    billed_models: list[str],
    recorded_models: list[str],
    not_final: bool,
    rates_of: RatesOf,
) -> dict[str, Any]:
    billed_tokens = dict.fromkeys(TOKEN_KEYS, 0)
    for kind, (quantity, _) in kinds.items():
        for k in _ADDS_TO.get(kind, ()):
            billed_tokens[k] += quantity
    billed_nusd = sum(c for _, c in kinds.values())
    recorded_tokens = {
        "input": rec[1],
        "output": rec[2],
        "cached_input": rec[3],
        "cache_write": rec[4],
    }
    recorded_nusd = rec[5]
    missing = {k: max(0, billed_tokens[k] - recorded_tokens[k]) for k in TOKEN_KEYS}
    extra = {k: max(0, recorded_tokens[k] - billed_tokens[k]) for k in TOKEN_KEYS}
    flags: list[str] = []
    comparable = model != NO_MODEL
    if comparable and any(missing[k] > TOLERANCE * billed_tokens[k] for k in TOKEN_KEYS):
        flags.append("untracked_spend")
    if comparable and any(extra[k] > TOLERANCE * billed_tokens[k] for k in TOKEN_KEYS):
        flags.append("over_recorded")
    drift: list[dict[str, Any]] = []
    if (
        comparable
        and not flags
        and billed_nusd > 0
        and abs(billed_nusd - recorded_nusd) > max(TOLERANCE * billed_nusd, MIN_DRIFT_NUSD)
    ):
        flags.append("price_drift")
        drift = _drifted_rates(provider, day, recorded_models or [model], kinds, rates_of)
    if not_final:
        flags.append("not_final")
    row: dict[str, Any] = {
        "day": _day(day),
        "provider": provider,
        "model": model,
        "billed_usd": billed_nusd / NANO,
        "recorded_usd": recorded_nusd / NANO,
        "billed_nusd": billed_nusd,
        "recorded_nusd": recorded_nusd,
        "difference_usd": (billed_nusd - recorded_nusd) / NANO,
        "capture_ratio": recorded_nusd / billed_nusd if billed_nusd else None,
        "billed_tokens": billed_tokens,
        "recorded_tokens": recorded_tokens,
        "missing_tokens": missing,
        "recorded_requests": rec[0],
        "flags": flags,
        "billed_models": billed_models,
        "recorded_models": recorded_models,
    }
    if drift:
        row["drifted_rates"] = drift
    return row


def _drifted_rates(
    provider: str,
    day: int,
    models: Sequence[str],
    kinds: Mapping[str, list[int]],
    rates_of: RatesOf,
) -> list[dict[str, Any]]:
    """The rates whose billed price (cost / tokens) is apart from the price book's."""
    rates = rates_of(provider, models[0], day + DAY / 2)
    out: list[dict[str, Any]] = []
    if rates is None:
        return [{"kind": "all", "reason": f"no price-book rates for {models[0]!r}"}]
    for kind, (quantity, cost) in sorted(kinds.items()):
        book = _rate(rates, kind)
        if book is None or quantity <= 0 or cost <= 0:
            continue
        per = 1 if kind == "web_search" else 1_000_000
        billed_rate = cost / NANO / quantity * per
        if _apart(billed_rate, book):
            out.append(
                {
                    "kind": kind,
                    "billed_per_1m" if per > 1 else "billed_per_search": round(billed_rate, 9),
                    "price_book_per_1m" if per > 1 else "price_book_per_search": book,
                    "source": rates.source,
                }
            )
    return out


def totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per provider: dollars and tokens of every compared row, and the flags counted."""
    out: dict[str, Any] = {}
    for r in rows:
        t = out.setdefault(
            r["provider"],
            {
                "billed_nusd": 0,
                "recorded_nusd": 0,
                "billed_tokens": dict.fromkeys(TOKEN_KEYS, 0),
                "recorded_tokens": dict.fromkeys(TOKEN_KEYS, 0),
                "flags": dict.fromkeys(FLAGS, 0),
            },
        )
        t["billed_nusd"] += r["billed_nusd"]
        t["recorded_nusd"] += r["recorded_nusd"]
        for k in TOKEN_KEYS:
            t["billed_tokens"][k] += r["billed_tokens"][k]
            t["recorded_tokens"][k] += r["recorded_tokens"][k]
        for f in r["flags"]:
            t["flags"][f] += 1
    for t in out.values():
        b, rec = t["billed_nusd"], t["recorded_nusd"]
        t["billed_usd"] = b / NANO
        t["recorded_usd"] = rec / NANO
        t["difference_usd"] = (b - rec) / NANO
        t["capture_ratio"] = rec / b if b else None
    return out


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
