"""The sidecar's budget gauges, computed from the ledger when scraped.

`ai_budget_limit`, `ai_budget_used`, `ai_budget_remaining` (each with a `unit` label,
tokens or usd, like `ai_tokens` and `ai_cost` carry a `type`) and
`ai_budget_hours_to_exhaustion` at the last hour's burn rate, for the budgets in the
config file. The JSON view shows the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ai_usage_exporter.core.budgets import BudgetSpec, Usage, gauges, period_start
from ai_usage_exporter.ledger import Ledger, LedgerError

# Keys shown per scoped budget without `match`, the most used first: a label per
# tenant or user must stay bounded.
MAX_KEYS_PER_BUDGET = 50

GAUGES: tuple[tuple[str, str, str], ...] = (
    ("ai_budget_limit", "limit", "Budget limit for the period, in the unit named by the unit label."),
    ("ai_budget_used", "used", "Budget used so far this period, in the unit named by the unit label."),
    ("ai_budget_remaining", "remaining", "Budget left this period (never below 0), in the unit named by the unit label."),
    ("ai_budget_hours_to_exhaustion", "hours_to_exhaustion", "Hours until the budget is used up at the last hour's rate; +Inf when nothing was used in the last hour."),
)  # fmt: skip
LABELS = ("budget", "scope", "key", "period", "unit")


def budget_rows(
    ledger: Ledger, specs: Sequence[BudgetSpec], now: float, run_started: float
) -> list[dict[str, Any]]:
    """One row per budget, key and unit: limit, used, remaining, hours to exhaustion."""
    rows: list[dict[str, Any]] = []
    for spec in specs:
        start = period_start(spec.period, now, run_started)
        used = ledger.usage_since(start, spec.field, spec.match)
        last_hour = ledger.usage_since(max(start, now - 3600.0), spec.field, spec.match)
        if spec.field is None:
            keys = [""]
        elif spec.match is not None:
            keys = [spec.match]
        else:
            keys = sorted(used, key=lambda k: (-used[k][1], -used[k][0], k))[:MAX_KEYS_PER_BUDGET]
        for key in keys:
            u = used.get(key, (0, 0.0, 0))
            h = last_hour.get(key, (0, 0.0, 0))
            rows.extend(gauges(spec, key, Usage(*u), Usage(*h)))
    return rows


class BudgetCollector(Collector):
    def __init__(self, ledger: Ledger, specs: Sequence[BudgetSpec], run_started: float) -> None:
        self.ledger = ledger
        self.specs = tuple(specs)
        self.run_started = run_started
        # More rows of the same gauges from elsewhere (the gateway's per-key budgets).
        self.sources: list[Callable[[], list[dict[str, Any]]]] = []

    def rows(self) -> list[dict[str, Any]]:
        rows = budget_rows(self.ledger, self.specs, time.time(), self.run_started)
        for source in self.sources:
            rows.extend(source())
        return rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            rows = self.rows()
        except LedgerError:
            return
        for name, field, help_text in GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=LABELS)
            for r in rows:
                family.add_metric([str(r[label]) for label in LABELS], float(r[field]))
            yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
