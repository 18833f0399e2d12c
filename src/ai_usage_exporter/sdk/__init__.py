"""The Python SDK: where events go, instrumented clients, tracking, context, budgets, sessions."""

from __future__ import annotations

from .budget import Budget, BudgetExceeded
from .context import usage_context
from .core import configure, disable, enable, flush, is_enabled, shutdown, stats
from .instrument import instrument
from .session import Session, session
from .track import (
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
