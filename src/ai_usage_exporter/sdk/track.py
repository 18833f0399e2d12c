"""`track_token_usage`: the call apps already make by hand after each LLM call.

``metadata``'s ``provider``, ``input_tokens`` and ``output_tokens`` fill the event;
embedding tokens are input tokens. An LLM total that cannot be split is never
guessed into input or output: the call is counted with no input or output tokens,
at level ``warn``, and the total is kept as ``metadata.unsplit_total`` in the ledger
(see the README's SDK section).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.shapes import USAGE_FIELDS

log = logging.getLogger("ai_usage_exporter.sdk")

TOKEN_TYPE_LLM = "llm"
TOKEN_TYPE_EMBEDDING = "embedding"

OPERATION_QUERY = "query"
OPERATION_CHAT = "chat"
OPERATION_COMPLETION = "completion"
OPERATION_EMBEDDING = "embedding"
OPERATION_INGESTION = "ingestion"
OPERATION_CHUNKING = "chunking"
OPERATION_RERANK = "rerank"

# Every count an event takes, so a kind the server adds is read from metadata too.
_TOKEN_KEYS = USAGE_FIELDS
_warned_unsplit: set[str] = set()


def usage_event(
    *,
    tenant_id: str | None = None,
    tokens: int | None = None,
    model: str,
    token_type: str = TOKEN_TYPE_LLM,
    operation: str | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The usage event `track_token_usage` records, as a plain mapping (pure)."""
    if token_type not in (TOKEN_TYPE_LLM, TOKEN_TYPE_EMBEDDING):
        raise ValueError(
            f"token_type must be {TOKEN_TYPE_LLM!r} or {TOKEN_TYPE_EMBEDDING!r}, got {token_type!r}"
        )
    meta = dict(metadata) if metadata else {}
    event: dict[str, Any] = {"model": model}
    provider = fields.pop("provider", None) or meta.pop("provider", None)
    event["provider"] = provider or "unknown"
    if operation is not None:
        event["operation"] = operation
    elif token_type == TOKEN_TYPE_EMBEDDING:
        event["operation"] = OPERATION_EMBEDDING
    if tenant_id is not None:
        event["tenant"] = str(tenant_id)
    if idempotency_key is not None:
        event["idempotency_key"] = idempotency_key
    counts = {k: fields.pop(k) for k in _TOKEN_KEYS if fields.get(k) is not None}
    for k in _TOKEN_KEYS:
        if k not in counts and isinstance(meta.get(k), int) and not isinstance(meta[k], bool):
            counts[k] = meta.pop(k)
    if token_type == TOKEN_TYPE_EMBEDDING:
        # Embedding models read text and write none: every token is an input token.
        if "input_tokens" not in counts and tokens is not None:
            counts["input_tokens"] = tokens
    elif "input_tokens" not in counts and "output_tokens" not in counts and tokens:
        meta["unsplit_total"] = tokens
        event.setdefault("level", "warn")
        if model not in _warned_unsplit:
            _warned_unsplit.add(model)
            log.warning(
                "track_token_usage(model=%r) got a total of %d tokens without input_tokens and "
                "output_tokens; the call is counted without tokens and the total kept in "
                "metadata.unsplit_total. Pass metadata input_tokens and output_tokens.",
                model,
                tokens,
            )
    elif (
        tokens is not None
        and counts
        and tokens != sum(counts.get(k, 0) for k in ("input_tokens", "output_tokens"))
    ):
        meta["reported_total"] = tokens
    event.update(counts)
    event.update(fields)
    if meta:
        event["metadata"] = meta
    return event


async def track_token_usage(
    *,
    tenant_id: str | None = None,
    tokens: int | None = None,
    model: str,
    token_type: str = TOKEN_TYPE_LLM,
    operation: str | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Record one LLM or embedding call's tokens; returns at once (the event is queued)."""
    track_token_usage_sync(
        tenant_id=tenant_id,
        tokens=tokens,
        model=model,
        token_type=token_type,
        operation=operation,
        idempotency_key=idempotency_key,
        metadata=metadata,
        **fields,
    )


def track_token_usage_sync(
    *,
    tenant_id: str | None = None,
    tokens: int | None = None,
    model: str,
    token_type: str = TOKEN_TYPE_LLM,
    operation: str | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    **fields: Any,
) -> None:
    """The synchronous twin of `track_token_usage`."""
    from ai_usage_exporter.sdk.core import emit

    emit(
        usage_event(
            tenant_id=tenant_id,
            tokens=tokens,
            model=model,
            token_type=token_type,
            operation=operation,
            idempotency_key=idempotency_key,
            metadata=metadata,
            **fields,
        )
    )
