"""`ai_gateway_fallbacks_total`: how often a route moved on from a failed upstream."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

FALLBACKS = "ai_gateway_fallbacks"
FALLBACKS_HELP = (
    "Gateway calls that moved on from a failed upstream to the next, by route, the upstream "
    "that failed (from), the one tried next (to) and the reason (rate_limit, server, timeout, "
    "connection)."
)
FALLBACK_LABELS = ("route", "from", "to", "reason")


class FallbackCounter(Collector):
    """Counts fallbacks; label values are config names and error types, so they stay bounded."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str, str], int] = {}
        self._lock = threading.Lock()

    def inc(self, route: str, from_: str, to: str, reason: str) -> None:
        key = (route, from_, to, reason)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def value(self, route: str, from_: str, to: str, reason: str) -> int:
        return self._counts.get((route, from_, to, reason), 0)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(FALLBACKS, FALLBACKS_HELP, labels=FALLBACK_LABELS)
        with self._lock:
            items = sorted(self._counts.items())
        for labels, n in items:
            family.add_metric(list(labels), n)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(FALLBACKS, FALLBACKS_HELP, labels=FALLBACK_LABELS)
