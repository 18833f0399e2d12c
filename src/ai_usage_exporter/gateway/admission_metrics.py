"""`ai_gateway_rejected_total{reason}` and `ai_gateway_rate_limiter_errors_total{outcome}`."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ai_usage_exporter.gateway.rejections import REASONS

REJECTED = "ai_gateway_rejected"
REJECTED_HELP = (
    "Gateway calls refused before they went upstream, by reason (unauthorized, expired, "
    "route_not_allowed, model_not_allowed, budget, rate_limit, rate_limiter_unavailable, "
    "ledger_unavailable)."
)
LIMITER_ERRORS = "ai_gateway_rate_limiter_errors"
LIMITER_ERRORS_HELP = (
    "Rate-limit checks that could not reach the shared limiter (Redis), by outcome: "
    "fail_open (the call went on unlimited) or fail_closed (it was refused with a 503)."
)
OUTCOMES = ("fail_open", "fail_closed")


class AdmissionCounters(Collector):
    """Counts refusals and limiter failures; every label value is from a fixed set."""

    def __init__(self) -> None:
        self._rejected = dict.fromkeys(REASONS, 0)
        self._errors = dict.fromkeys(OUTCOMES, 0)
        self._lock = threading.Lock()

    def rejected(self, reason: str) -> None:
        with self._lock:
            self._rejected[reason] = self._rejected.get(reason, 0) + 1

    def limiter_error(self, outcome: str) -> None:
        with self._lock:
            self._errors[outcome] = self._errors.get(outcome, 0) + 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            rejected, errors = dict(self._rejected), dict(self._errors)
        family = CounterMetricFamily(REJECTED, REJECTED_HELP, labels=("reason",))
        for reason, n in rejected.items():
            family.add_metric([reason], n)
        yield family
        family = CounterMetricFamily(LIMITER_ERRORS, LIMITER_ERRORS_HELP, labels=("outcome",))
        for outcome, n in errors.items():
            family.add_metric([outcome], n)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(REJECTED, REJECTED_HELP, labels=("reason",))
        yield CounterMetricFamily(LIMITER_ERRORS, LIMITER_ERRORS_HELP, labels=("outcome",))
