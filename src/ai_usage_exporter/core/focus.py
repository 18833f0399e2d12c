"""Cost rows in the FinOps FOCUS specification's columns, as CSV (pure).

FOCUS (https://focus.finops.org) is the column set FinOps tools read: one row per
charge with its billed and effective cost, its charge period, who provided and
published the service, the SKU (here: the model) and the quantity consumed. Money
is rendered from whole nanodollars as an exact decimal, never through a float.
Columns that are ours and not FOCUS's carry the spec's `x_` prefix.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

COLUMNS: tuple[str, ...] = (
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "ChargeCategory",
    "ChargeFrequency",
    "ChargeDescription",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "ServiceName",
    "ServiceCategory",
    "SkuId",
    "ConsumedQuantity",
    "ConsumedUnit",
    "x_TokenType",
    "x_Source",
)
_NAMES: dict[str, tuple[str, str]] = {
    "openai": ("OpenAI", "OpenAI API"),
    "anthropic": ("Anthropic", "Claude API"),
}
_NANO = Decimal(1_000_000_000)
DAY = 86_400


@dataclass(frozen=True, slots=True)
class Charge:
    """One day's cost of one kind of a provider's model."""

    day: int  # epoch seconds of the UTC day's start
    provider: str
    model: str
    kind: str  # token kind (input, output, cached_input...) or another billed unit
    quantity: int
    unit: str  # "Tokens", "Requests", or "" when nothing countable was billed
    cost_nusd: int
    source: str  # "provider_bill" or "ledger"


def money(nusd: int) -> str:
    """Exact dollars of whole nanodollars: 1500000000 -> "1.5"."""
    d = (Decimal(nusd) / _NANO).normalize()
    return format(d, "f")


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month(ts: int) -> tuple[int, int]:
    d = datetime.fromtimestamp(ts, UTC)
    start = datetime(d.year, d.month, 1, tzinfo=UTC)
    end = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()), int(end.timestamp())


def row(c: Charge) -> dict[str, str]:
    provider_name, service = _NAMES.get(c.provider.lower(), (c.provider, c.provider))
    month_start, month_end = _month(c.day)
    cost = money(c.cost_nusd)
    return {
        "BilledCost": cost,
        "EffectiveCost": cost,
        "BillingCurrency": "USD",
        "ChargeCategory": "Usage",
        "ChargeFrequency": "Usage-Based",
        "ChargeDescription": f"{c.model or 'no model'} {c.kind}".strip(),
        "ChargePeriodStart": _iso(c.day),
        "ChargePeriodEnd": _iso(c.day + DAY),
        "BillingPeriodStart": _iso(month_start),
        "BillingPeriodEnd": _iso(month_end),
        "ProviderName": provider_name,
        "PublisherName": provider_name,
        "InvoiceIssuerName": provider_name,
        "ServiceName": service,
        "ServiceCategory": "AI and Machine Learning",
        "SkuId": c.model,
        "ConsumedQuantity": str(c.quantity) if c.unit else "",
        "ConsumedUnit": c.unit,
        "x_TokenType": c.kind,
        "x_Source": c.source,
    }


def render_focus(charges: Iterable[Charge]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for c in sorted(charges, key=lambda c: (c.day, c.provider, c.model, c.kind)):
        writer.writerow(row(c))
    return buf.getvalue()


def ledger_charges(rows: Iterable[Sequence[Any]]) -> list[Charge]:
    """Charges from day-bucket sums (day, provider, model, input_tokens, output_tokens,
    cost_input_nusd, cost_output_nusd): the ledger's estimate, input and output apart."""
    out = []
    for day, provider, model, tin, tout, cin, cout in rows:
        for kind, n, cost in (("input", tin, cin), ("output", tout, cout)):
            if n or cost:
                out.append(
                    Charge(
                        int(day),
                        str(provider),
                        str(model),
                        kind,
                        int(n),
                        "Tokens",
                        int(cost),
                        "ledger",
                    )
                )
    return out
