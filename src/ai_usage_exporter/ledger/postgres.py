"""PostgreSQL ledger, for deployments that run several sidecars or keep data centrally."""

from __future__ import annotations

import threading
from typing import Any

from .base import LedgerError, SQLLedger

# Serialises writers of every sidecar sharing the database, so the idempotency check
# and the insert see one another (an arbitrary constant, the same in every process).
_WRITE_LOCK_ID = 0x41495553


class PostgresLedger(SQLLedger):
    placeholder = "%s"
    int_type = "BIGINT"
    floor_sql = "CAST(floor({}) AS BIGINT)"
    real_type = "DOUBLE PRECISION"
    id_column = "id BIGSERIAL PRIMARY KEY"

    def __init__(self, url: str, *, store_text: bool = False) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise LedgerError(
                "a postgresql:// ledger needs psycopg: pip install 'ai-usage-exporter[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.url = _redact_url(url)
        self._dsn = url
        self.store_text = store_text
        super().__init__()
        self._conn_lock = threading.Lock()
        try:
            self._w = psycopg.connect(url)
            self._r = psycopg.connect(url, autocommit=True)
            with self._w.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK_ID,))
                self.create_schema(cur)
            self._w.commit()
        except psycopg.Error as exc:
            raise LedgerError(f"cannot open ledger {self.url}: {exc}") from exc

    def _existing_columns(self, cur: Any, table: str) -> set[str]:
        cur.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        )
        return {row[0] for row in cur.fetchall()}

    def _write_conn(self) -> Any:
        if self._w.closed or self._w.broken:
            self._w = self._psycopg.connect(self._dsn)
        return self._w

    def _read_conn(self) -> Any:
        if self._r.closed or self._r.broken:
            self._r = self._psycopg.connect(self._dsn, autocommit=True)
        return self._r

    def _begin(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK_ID,))

    def close(self) -> None:
        self._w.close()
        self._r.close()


def _redact_url(url: str) -> str:
    """Hide a password in the URL before it appears in messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
