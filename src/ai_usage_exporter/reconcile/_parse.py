"""Reading the admin APIs' values: money, counts, day buckets, pages (pure).

The documented shapes are not the whole truth, so each reader takes what the
providers were seen to send: amounts as JSON numbers or as decimal strings
(`"0.06"`, `"1.5E-7"`), counts as numbers or digit strings, null for zero.
Money is parsed as Decimal and kept in whole nanodollars, as the ledger keeps its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from ai_usage_exporter.ledger.provider_usage import ProviderUsage
from ai_usage_exporter.reconcile.client import AdminClient, FetchError, Params

NANO = 1_000_000_000
DAY = 86_400
# A closed day becomes final this long after its end: both providers take hours
# to settle the most recent usage, and may restate it until then.
FINAL_AFTER = 6 * 3600
MAX_PAGES = 1000


class ShapeError(FetchError):
    """A page did not have the shape the provider documents (or was seen to send)."""


def money(value: Any, where: str) -> Decimal:
    """An amount as Decimal: a JSON number (parsed as Decimal) or a decimal string."""
    if isinstance(value, bool) or value is None:
        raise ShapeError(f"{where}: expected an amount, got {value!r}")
    try:
        d = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ShapeError(f"{where}: expected an amount, got {value!r}") from None
    if not d.is_finite():
        raise ShapeError(f"{where}: expected a finite amount, got {value!r}")
    return d


def nanodollars(usd: Decimal) -> int:
    """Whole nanodollars, rounded half to even (the ledger's own unit)."""
    return int((usd * NANO).to_integral_value(ROUND_HALF_EVEN))


def count(value: Any, where: str) -> int:
    """A token or request count: a non-negative integer, a digit string, or null (0)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ShapeError(f"{where}: expected a count, got {value!r}")
    try:
        d = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ShapeError(f"{where}: expected a count, got {value!r}") from None
    if not d.is_finite() or d < 0 or d != d.to_integral_value():
        raise ShapeError(f"{where}: expected a non-negative whole count, got {value!r}")
    return int(d)


def epoch(value: Any, where: str) -> int:
    """Unix seconds from an integer (OpenAI) or an RFC 3339 string (Anthropic)."""
    if isinstance(value, bool):
        raise ShapeError(f"{where}: expected a time, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    raise ShapeError(f"{where}: expected unix seconds or an RFC 3339 time, got {value!r}")


def whole_day(start: int, end: int | None) -> int | None:
    """The UTC day a bucket covers, or None when it is not exactly one whole day.

    The last bucket of a report often ends at the time of the request: it is partial,
    and left for a later fetch.
    """
    if start % DAY or (end is not None and end != start + DAY):
        return None
    return start


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ShapeError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def listing(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ShapeError(f"{where}: expected a list, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a bucketed report: its buckets and the cursor to the next page."""

    buckets: list[tuple[int, int | None, list[Mapping[str, Any]]]]  # start, end, results
    next_page: str | None

    def days(self, window: range) -> list[tuple[int, int | None, list[Mapping[str, Any]]]]:
        """The buckets that are one whole UTC day starting inside `window`."""
        return [b for b in self.buckets if whole_day(b[0], b[1]) is not None and b[0] in window]


def page(body: Any, where: str, start_key: str, end_key: str) -> Page:
    """A page of buckets, as both providers shape them: data[], has_more, next_page."""
    body = mapping(body, where)
    buckets = []
    for i, b in enumerate(listing(body.get("data"), f"{where}.data")):
        at = f"{where}.data[{i}]"
        b = mapping(b, at)
        start = epoch(b.get(start_key), f"{at}.{start_key}")
        end_raw = b.get(end_key)
        end = epoch(end_raw, f"{at}.{end_key}") if end_raw is not None else None
        results = [
            mapping(r, f"{at}.results[{j}]")
            for j, r in enumerate(listing(b.get("results"), f"{at}.results"))
        ]
        buckets.append((start, end, results))
    more = body.get("has_more")
    nxt = body.get("next_page")
    if more is True and not isinstance(nxt, str):
        raise ShapeError(f"{where}: has_more is true but next_page is {nxt!r}")
    return Page(buckets, nxt if more is True else None)


def pages(
    client: AdminClient, path: str, params: Params, parse: Callable[[Any], Page]
) -> Iterator[Page]:
    """Every page of a report, following next_page until has_more is false."""
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        body = client.get(path, [*params, *((("page", cursor),) if cursor else ())])
        p = parse(body)
        yield p
        if p.next_page is None:
            return
        if p.next_page in seen:
            raise ShapeError(f"{client.provider}: {path} returned page {p.next_page!r} twice")
        seen.add(p.next_page)
        cursor = p.next_page
    raise ShapeError(f"{client.provider}: {path} had more than {MAX_PAGES} pages")


Key = tuple[int, str, str, str]  # day, scope, model, kind


@dataclass
class Tally:
    """Sums per (day, scope, model, kind) over every page and endpoint of one fetch."""

    provider: str
    quantity: dict[Key, int] = field(default_factory=dict)
    cost: dict[Key, int] = field(default_factory=dict)
    cost_days: set[int] = field(default_factory=set)
    usage_days: dict[str, set[int]] = field(default_factory=dict)

    def add_quantity(self, key: Key, n: int) -> None:
        if n:
            self.quantity[key] = self.quantity.get(key, 0) + n

    def add_cost(self, key: Key, nusd: int) -> None:
        if nusd:
            self.cost[key] = self.cost.get(key, 0) + nusd

    def rows(self, days: set[int]) -> list[ProviderUsage]:
        keys = sorted({k for k in (*self.quantity, *self.cost) if k[0] in days})
        return [
            ProviderUsage(
                self.provider,
                d,
                s,
                m,
                k,
                self.quantity.get((d, s, m, k), 0),
                self.cost.get((d, s, m, k), 0),
            )
            for d, s, m, k in keys
        ]

    def covered(self) -> set[int]:
        """Days every endpoint returned a whole bucket for: only those are replaced."""
        days = set(self.cost_days)
        for seen in self.usage_days.values():
            days &= seen
        return days


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one fetch found: the days it covered (day -> final), scopes and rows."""

    provider: str
    days: dict[int, bool]
    scopes: tuple[str, ...]
    rows: list[ProviderUsage]
    requests: int = 0


def finish(tally: Tally, scopes: tuple[str, ...], now: float, requests: int) -> Fetched:
    days = tally.covered()
    return Fetched(
        tally.provider,
        {d: d + DAY + FINAL_AFTER <= now for d in sorted(days)},
        scopes,
        tally.rows(days),
        requests,
    )
