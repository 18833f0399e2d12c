"""ai-usage-exporter: count what LLM calls spend (tokens, cost, latency, errors) for Prometheus."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ai-usage-exporter")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

from .events import EventError, Limits, UsageEvent, normalise_usage, parse_event, parse_events  # noqa: E402
from .recorder import Recorder, RecordResult  # noqa: E402
from .sdk import (  # noqa: E402
    OPERATION_CHAT,
    OPERATION_CHUNKING,
    OPERATION_COMPLETION,
    OPERATION_EMBEDDING,
    OPERATION_INGESTION,
    OPERATION_QUERY,
    OPERATION_RERANK,
    TOKEN_TYPE_EMBEDDING,
    TOKEN_TYPE_LLM,
    Budget,
    BudgetExceeded,
    Session,
    configure,
    disable,
    enable,
    flush,
    instrument,
    is_enabled,
    session,
    shutdown,
    track_token_usage,
    track_token_usage_sync,
    usage_context,
)

__all__ = [
    "OPERATION_CHAT",
    "OPERATION_CHUNKING",
    "OPERATION_COMPLETION",
    "OPERATION_EMBEDDING",
    "OPERATION_INGESTION",
    "OPERATION_QUERY",
    "OPERATION_RERANK",
    "TOKEN_TYPE_EMBEDDING",
    "TOKEN_TYPE_LLM",
    "Budget",
    "BudgetExceeded",
    "Session",
    "configure",
    "disable",
    "enable",
    "flush",
    "instrument",
    "is_enabled",
    "session",
    "shutdown",
    "track_token_usage",
    "track_token_usage_sync",
    "usage_context",
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
