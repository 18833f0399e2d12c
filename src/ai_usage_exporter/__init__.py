"""ai-usage-exporter: count what LLM calls spend (tokens, cost, latency, errors) for Prometheus.

The public API only; no module of the package imports this one (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from ai_usage_exporter.core.events.model import EventError, Limits, UsageEvent
from ai_usage_exporter.core.events.parse import parse_event, parse_events
from ai_usage_exporter.core.events.usage import normalise_usage
from ai_usage_exporter.core.version import __version__
from ai_usage_exporter.recorder import Recorder, RecordResult
from ai_usage_exporter.sdk import (
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
    "create_app",
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


def __getattr__(name: str) -> Any:
    # The HTTP server is imported only when asked for, so `import ai_usage_exporter` in an
    # app that only uses the SDK does not load Starlette and the server's routes.
    if name == "create_app":
        from ai_usage_exporter.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
