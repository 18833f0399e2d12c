"""PostgreSQL ledger, for deployments that run several sidecars or keep data centrally.

Sidecars sharing one database write concurrently, with no lock between them: each
batch is one `INSERT ... ON CONFLICT (idempotency_key) DO NOTHING RETURNING`, so the
unique index decides which events are new (a retry that reached another sidecar is
a duplicate), and only those go into the rollup deltas. The deltas are upserted into
this instance's rollup and time-bucket rows, which no other sidecar writes, so
writers do not wait on one another there either.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ai_usage_exporter.core.rollup import INSTANCE, UNASSIGNED_INSTANCE
from ai_usage_exporter.core.shapes import USAGE_FIELDS
from ai_usage_exporter.ledger.base import (
    _REAL_COLUMNS,
    EVENT_COLUMNS,
    PER_INSTANCE_TABLES,
    LedgerError,
    Priced,
    SQLLedger,
    event_row,
    q,
)

# Serialises schema creation and migration when several sidecars start at once (an
# arbitrary constant, the same in every process). Writes never take it.
_SCHEMA_LOCK_ID = 0x41495553


def _array_type(column: str) -> str:
    if column in USAGE_FIELDS:
        return "bigint[]"
    if column in _REAL_COLUMNS:
        return "float8[]"
    return "text[]"


_COLS = ", ".join(q(c) for c in EVENT_COLUMNS)
_ON_CONFLICT = "ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key"
# How a batch reaches the table was measured (bench/fleet.py, "insert statements"):
# below this many rows one INSERT over unnest() of one array per column is fastest;
# from it on, COPY into a temporary table and one INSERT ... SELECT from there is,
# at close to a bare COPY's speed. Multi-row VALUES and executemany trail both.
COPY_FROM_ROWS = 500
_UNNEST_SQL = (
    f"INSERT INTO events ({_COLS}) "
    f"SELECT * FROM unnest({', '.join(f'%s::{_array_type(c)}' for c in EVENT_COLUMNS)}) "
    f"{_ON_CONFLICT}"
)
_STAGE_TABLE = "ai_usage_events_in"
_STAGE_SQL = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE_TABLE} "
    f"({', '.join(f'{q(c)} {_array_type(c)[:-2]}' for c in EVENT_COLUMNS)}) "
    "ON COMMIT DELETE ROWS"
)
_FROM_STAGE_SQL = f"INSERT INTO events ({_COLS}) SELECT {_COLS} FROM {_STAGE_TABLE} {_ON_CONFLICT}"


class PostgresLedger(SQLLedger):
    placeholder = "%s"
    int_type = "BIGINT"
    floor_sql = "CAST(floor({}) AS BIGINT)"
    real_type = "DOUBLE PRECISION"
    id_column = "id BIGSERIAL PRIMARY KEY"

    def __init__(self, url: str, *, store_text: bool = False, instance: str | None = None) -> None:
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
        super().__init__(instance)
        self._conn_lock = threading.Lock()
        self._staged_on: Any = None  # the connection that has the staging table
        try:
            self._w = psycopg.connect(url)
            self._r = psycopg.connect(url, autocommit=True)
            with self._w.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))
                self.create_schema(cur)
                if self._adopts:
                    # Rows from before instances existed go to the first sidecar that
                    # opens the ledger, as a single sidecar's ledger did until then.
                    self._move_instance_rows(
                        cur, f"{q(INSTANCE)} = %s", (UNASSIGNED_INSTANCE,), self.instance
                    )
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
        """Nothing: psycopg opens the transaction at the first statement."""

    def _begin_admin(self, cur: Any) -> None:
        # Writers of the instance being moved must not add to rows between the copy and
        # the delete; EXCLUSIVE still lets every reader through.
        for table in PER_INSTANCE_TABLES:
            cur.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")

    def _insert_new(self, cur: Any, priced: Sequence[Priced], received_at: float) -> list[bool]:
        inserted = [True] * len(priced)
        first: dict[str, int] = {}
        rows: list[tuple[Any, ...]] = []
        store_text, me = self.store_text, self.instance
        for i, (e, c) in enumerate(priced):
            key = e.idempotency_key
            if key is not None:
                if key in first:
                    inserted[i] = False
                    continue
                first[key] = i
            rows.append(event_row(e, c, received_at, store_text, me))
        if not rows:
            return inserted
        # Two transactions inserting overlapping keys in opposite orders would each
        # wait for the other (a deadlock); in key order they queue instead.
        rows.sort(key=_key_order)
        if len(rows) < COPY_FROM_ROWS:
            cur.execute(_UNNEST_SQL, [list(col) for col in zip(*rows, strict=True)])
        else:
            if self._staged_on is not cur.connection:
                cur.execute(_STAGE_SQL)
                self._staged_on = cur.connection
            with cur.copy(f"COPY {_STAGE_TABLE} ({_COLS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_FROM_STAGE_SQL)
        stored = {r[0] for r in cur.fetchall()}
        for key, i in first.items():
            if key not in stored:
                inserted[i] = False
        return inserted

    def close(self) -> None:
        self._w.close()
        self._r.close()


def _key_order(row: tuple[Any, ...]) -> tuple[bool, str]:
    key = row[0]
    return (key is not None, key or "")


def _redact_url(url: str) -> str:
    """Hide a password in the URL before it appears in messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
