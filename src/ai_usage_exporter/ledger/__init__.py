"""Durable event stores: SQLite (the default) and PostgreSQL."""

from __future__ import annotations

from ai_usage_exporter.ledger.base import EVENT_COLUMNS, Ledger, LedgerError, WriteResult
from ai_usage_exporter.ledger.sqlite import SQLiteLedger


def open_ledger(
    url: str, *, synchronous: str = "full", store_text: bool = False, instance: str | None = None
) -> Ledger:
    """A path (or sqlite:///path) opens SQLite; postgresql://... opens PostgreSQL.

    `instance` names the sidecar whose rollup rows this ledger writes and rebuilds
    counters from; None opens it for tools, adopting nothing.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from ai_usage_exporter.ledger.postgres import PostgresLedger

        return PostgresLedger(url, store_text=store_text, instance=instance)
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///") :]
    elif "://" in url:
        raise LedgerError(
            f"unsupported ledger URL {url!r}: give a file path or a postgresql:// URL"
        )
    return SQLiteLedger(url, synchronous=synchronous, store_text=store_text, instance=instance)


__all__ = ["EVENT_COLUMNS", "Ledger", "LedgerError", "SQLiteLedger", "WriteResult", "open_ledger"]
