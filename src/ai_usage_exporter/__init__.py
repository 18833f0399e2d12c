"""ai-usage-exporter: count what LLM calls spend (tokens, cost, latency, errors) for Prometheus."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ai-usage-exporter")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

from .events import EventError, Limits, UsageEvent, normalise_usage, parse_event, parse_events  # noqa: E402
from .recorder import Recorder, RecordResult  # noqa: E402

__all__ = [
    "EventError",
    "Limits",
    "RecordResult",
    "Recorder",
    "UsageEvent",
    "__version__",
    "normalise_usage",
    "parse_event",
    "parse_events",
]
