"""The Python SDK: where events go, instrumented clients, tracking, context, budgets, sessions."""

from __future__ import annotations

from ai_usage_exporter.sdk.budget import Budget, BudgetExceeded
from ai_usage_exporter.sdk.context import usage_context
from ai_usage_exporter.sdk.core import (
    configure,
    disable,
    enable,
    flush,
    is_enabled,
    shutdown,
    stats,
)
from ai_usage_exporter.sdk.instrument import instrument
from ai_usage_exporter.sdk.session import Session, session
from ai_usage_exporter.sdk.track import (
    OPERATION_CHAT,
    OPERATION_CHUNKING,
    OPERATION_COMPLETION,
    OPERATION_EMBEDDING,
    OPERATION_INGESTION,
    OPERATION_QUERY,
    OPERATION_RERANK,
    TOKEN_TYPE_EMBEDDING,
    TOKEN_TYPE_LLM,
    track_token_usage,
    track_token_usage_sync,
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
    "stats",
    "track_token_usage",
    "track_token_usage_sync",
    "usage_context",
]
