"""The durable event store, shared by the SQLite and PostgreSQL dialects.

One write is one transaction: drop events whose idempotency_key is already stored
(or repeated earlier in the batch), insert the rest, and add their rollup deltas to
the rollup table. The caller updates counters only after that commit returns.

Every ledger belongs to an *instance* (a sidecar's name): its event rows carry it and
its rollup rows are keyed by it, so several sidecars can share one PostgreSQL
database while each rebuilds its counters from its own rows only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any, Protocol

import orjson

from ai_usage_exporter.core.events.model import ATTRIBUTION_FIELDS, UsageEvent
from ai_usage_exporter.core.events.validate import QUERY_FIELDS
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.core.reports import ReportSource
from ai_usage_exporter.core.rollup import (
    INSTANCE,
    KEY_FIELDS,
    NANO,
    RETIRED_INSTANCE,
    SCOPES,
    STEPS,
    UNASSIGNED_INSTANCE,
    UNPRICED_COLUMNS,
    VALUE_COLUMNS,
    Delta,
    RollupKey,
    aggregate_timed,
    check_instance,
)
from ai_usage_exporter.core.shapes import USAGE_FIELDS
from ai_usage_exporter.ledger import buckets, provider_usage
from ai_usage_exporter.ledger import keys as gateway_keys
from ai_usage_exporter.ledger.keys import KeyQueries, KeyRecord
from ai_usage_exporter.ledger.provider_usage import ProviderUsageStore
from ai_usage_exporter.ledger.queries import INDEXES, OLD_INDEXES, EventQueries

log = logging.getLogger("ai_usage_exporter.ledger")

EVENT_COLUMNS: tuple[str, ...] = (
    "idempotency_key",
    "ts",
    "received_at",
    INSTANCE,
    "provider",
    "model",
    "operation",
    "service",
    "status",
    "level",
    "error_type",
    "duration_ms",
    "ttft_ms",
    *USAGE_FIELDS,
    "cost_input",
    "cost_output",
    "cost_total",
    "cost_source",
    "cost_reason",
    "service_tier",
    "provider_cost_usd",
    *ATTRIBUTION_FIELDS,
    "metadata",
    "prompt_text",
    "response_text",
    # The query this call served, on each of its calls' rows (see QUERY_FIELDS).
    "query_start",
    "query_end",
    "query_duration_ms",
    "query_text",
)

_REAL_COLUMNS = frozenset(
    (
        "ts",
        "received_at",
        "duration_ms",
        "ttft_ms",
        "cost_input",
        "cost_output",
        "cost_total",
        "provider_cost_usd",
        "query_start",
        "query_end",
        "query_duration_ms",
    )
)
_usage_values = attrgetter(*USAGE_FIELDS)

Priced = tuple[UsageEvent, Cost]

# Tables whose rows are per instance: name -> (key columns after `instance`, value
# columns). Every one is written in the same commit as the events; adopting or
# retiring an instance moves its rows in every one of them.
PER_INSTANCE_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "rollup": (KEY_FIELDS, VALUE_COLUMNS),
    buckets.TABLE: (buckets.BUCKET_KEY, VALUE_COLUMNS),
}

# Breakdowns of the JSON view: name -> the rollup columns grouped by.
BREAKDOWNS: dict[str, tuple[str, ...]] = {
    "by_service": ("service",),
    "by_model": ("provider", "model"),
    "by_agent": ("agent",),
    "by_tool": ("tool",),
    "by_tenant": ("tenant",),
    "by_node": ("node",),
    "by_key": ("key",),
}


class LedgerError(Exception):
    """The ledger could not commit; nothing of the write was stored."""


# The end of every "no ledger at ..." message: where the path came from.
WHERE_DB = "Check --db (or AI_USAGE_EXPORTER_DB, or db: in the config)"

# The readiness probe's row is larger than a page, so it needs new pages as an event
# batch does: a full database fails the probe too, not only the next commit.
_PROBE_VALUE = "probe " * 1500


class _ReadGuard:
    """The read connection's lock; a database error under it becomes a LedgerError.

    Every read runs under it, so a database that is gone (or a connection that broke)
    reaches the HTTP routes as "ledger unavailable" (503), never as a driver exception.
    """

    __slots__ = ("_lock", "_ledger")

    def __init__(self, ledger: SQLLedger) -> None:
        self._lock = threading.Lock()
        self._ledger = ledger

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        self._lock.release()
        if isinstance(exc, self._ledger.db_errors) and not isinstance(exc, LedgerError):
            raise LedgerError(f"ledger {self._ledger.url} cannot be read: {exc}") from exc


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: list[bool]  # per event of the write, False for a duplicate
    deltas: dict[RollupKey, Delta]


class Ledger(ReportSource, Protocol):
    """A ledger: the writes and reads the recorder, the commands and the reports make."""

    url: str
    instance: str

    def write(
        self,
        priced: Sequence[Priced],
        received_at: float,
        meta: Mapping[str, str] | None = None,
    ) -> WriteResult: ...
    def load_rollup(self) -> Iterator[tuple[RollupKey, Delta]]: ...
    def summary(
        self,
        limit: int = 100,
        scope: str = "instance",
        model_name: Callable[[str, str], str] | None = None,
    ) -> dict[str, Any]: ...
    def fleet_totals(self) -> dict[str, Any]: ...
    def instances(self) -> dict[str, int]: ...
    def retire_instance(self, name: str) -> int: ...
    def check_writable(self, commit: bool = False) -> None: ...
    def has_unadopted(self) -> bool: ...
    def adopt_unadopted(self) -> list[tuple[RollupKey, Delta]]: ...
    def count_events(self) -> int: ...
    def latest_event_ts(self) -> float | None: ...
    def events(self) -> list[dict[str, Any]]: ...
    def scope_instance(self, scope: str) -> str | None: ...
    def usage_since(
        self, since: float, field: str | None = None, value: str | None = None
    ) -> dict[str, tuple[int, float, int]]: ...
    def count_events_matching(
        self,
        filters: Mapping[str, str | Sequence[str]],
        since: float | None = None,
        until: float | None = None,
        instance: str | None = None,
    ) -> int: ...
    def count_events_before(self, ts: float) -> int: ...
    def sender_costs(
        self, since: float, instance: str | None = None, limit: int = 100_000
    ) -> tuple[int, float, float]: ...
    def delete_events_before(self, ts: float, batch: int = 20_000) -> int: ...
    def delete_buckets_before(self, step: int, ts: float) -> int: ...
    def replace_provider_usage(
        self,
        provider: str,
        days: Mapping[int, bool],
        scopes: Sequence[str],
        rows: Iterable[provider_usage.ProviderUsage],
    ) -> int: ...
    def provider_usage(
        self, provider: str, start: int, end: int
    ) -> tuple[list[provider_usage.ProviderUsage], dict[tuple[int, str], bool]]: ...
    def get_meta(self, key: str) -> str | None: ...
    def key_by_hash(self, key_hash: str) -> KeyRecord | None: ...
    def key_by_name(self, name: str) -> KeyRecord | None: ...
    def list_keys(self) -> list[KeyRecord]: ...
    def count_keys(self) -> int: ...
    def insert_key(self, record: KeyRecord) -> None: ...
    def update_key(self, name: str, changes: Mapping[str, Any]) -> KeyRecord | None: ...
    def key_usage(self, name: str, since: float, step: int = 86400) -> tuple[int, int, int]: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def close(self) -> None: ...


def q(name: str) -> str:
    # "user" is reserved in PostgreSQL; quoting every identifier keeps one SQL text for both.
    return f'"{name}"'


def event_row(
    e: UsageEvent, cost: Cost, received_at: float, store_text: bool, instance: str
) -> tuple[Any, ...]:
    """The event's values in EVENT_COLUMNS order, stored under `instance`."""
    return (
        e.idempotency_key,
        e.timestamp,
        received_at,
        instance,
        e.provider,
        e.model,
        e.operation,
        e.service,
        e.status,
        e.level,
        e.error_type,
        e.duration_ms,
        e.ttft_ms,
        *_usage_values(e),
        cost.input,
        cost.output,
        cost.total,
        cost.source,
        cost.reason,
        e.service_tier,
        e.provider_cost_usd,
        e.tenant,
        e.user,
        e.session_id,
        e.query_id,
        e.workflow_id,
        e.agent,
        e.task,
        e.tool,
        e.node,
        e.step,
        e.key,
        orjson.dumps(e.metadata).decode() if e.metadata is not None else None,
        e.prompt_text if store_text else None,
        e.response_text if store_text else None,
        e.query_start,
        e.query_end,
        e.query_duration_ms,
        e.query_text if store_text else None,
    )


class SQLLedger(EventQueries, ProviderUsageStore, KeyQueries):
    """Dialect-neutral ledger; subclasses supply connections and a few SQL words."""

    url: str
    placeholder = "?"
    int_type = "INTEGER"
    # Rounds a numeric SQL expression down to an integer ({} is the expression).
    floor_sql = "CAST({} AS INTEGER)"
    real_type = "REAL"
    id_column = "id INTEGER PRIMARY KEY"
    store_text: bool = False
    instance: str = ""
    # Whether the bucket table is clustered on (step, bucket, instance, key): reports
    # and charts read a time range of it, which then lies in one stretch of the file.
    clustered_buckets = False
    # The driver's errors: under the read lock they become LedgerError (see _ReadGuard).
    db_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, instance: str | None) -> None:
        try:
            self.instance = check_instance(instance)
        except ValueError as exc:
            raise LedgerError(str(exc)) from None
        self._adopts = instance is not None
        self._read_lock = _ReadGuard(self)
        self._insert_cache: dict[
            tuple[bool, ...], tuple[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]]
        ] = {}
        ph = self.placeholder
        all_cols = (INSTANCE, *KEY_FIELDS, *VALUE_COLUMNS)
        updates = ", ".join(f"{q(c)} = rollup.{q(c)} + excluded.{q(c)}" for c in VALUE_COLUMNS)
        self._upsert_sql = (
            f"INSERT INTO rollup ({', '.join(q(c) for c in all_cols)}) "
            f"VALUES ({', '.join([ph] * len(all_cols))}) "
            f"ON CONFLICT ({', '.join(q(c) for c in (INSTANCE, *KEY_FIELDS))}) "
            f"DO UPDATE SET {updates}"
        )
        self._bucket_upsert_sql = buckets.upsert_sql(ph)

    # ---------------------------------------------------------------- schema

    def schema(self) -> list[str]:
        """The tables, created when missing; indexes and the view come after migration."""
        # Each column has the default migration gives it (see _columns_by_table), so a
        # new ledger and a migrated one agree, and a tool writing rows by hand (e.g.
        # without `instance`) needs not name every column.
        event_cols = ",\n  ".join(f"{q(c)} {self._column_decl(c)}" for c in EVENT_COLUMNS)
        return [
            f"CREATE TABLE IF NOT EXISTS events (\n  {self.id_column},\n  {event_cols}\n)",
            *(self._per_instance_table(t, t) for t in PER_INSTANCE_TABLES),
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            *provider_usage.schema(self.int_type),
            gateway_keys.schema(self.int_type, self.real_type),
        ]

    def indexes(self) -> list[str]:
        """Indexes, created after migration has added the columns they name."""
        return [
            "CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key ON events (idempotency_key)",
            "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
            *INDEXES,
            # A clustered bucket table is ordered by (step, bucket) already.
            *(() if self.clustered_buckets else (buckets.RANGE_INDEX,)),
        ]

    def _per_instance_table(self, name: str, kind: str) -> str:
        """CREATE TABLE for a table of PER_INSTANCE_TABLES, keyed by instance first."""
        keys, values = PER_INSTANCE_TABLES[kind]
        # Text key columns default to '' so a rebuild can fill one an older table lacks.
        key_cols = ",\n  ".join(
            f"{q(c)} {self.int_type} NOT NULL"
            if c in buckets.INTEGER_KEYS
            else f"{q(c)} TEXT NOT NULL DEFAULT ''"
            for c in (INSTANCE, *keys)
        )
        value_cols = ",\n  ".join(f"{q(c)} {self.int_type} NOT NULL DEFAULT 0" for c in values)
        primary, options = (INSTANCE, *keys), ""
        if kind == buckets.TABLE and self.clustered_buckets:
            primary, options = buckets.CLUSTERED_KEY, " WITHOUT ROWID"
        return (
            f"CREATE TABLE IF NOT EXISTS {name} (\n  {key_cols},\n  {value_cols},\n"
            f"  PRIMARY KEY ({', '.join(q(c) for c in primary)})\n){options}"
        )

    def create_schema(self, cur: Any) -> None:
        """Create missing tables, then bring tables an older version made up to date.

        A ledger written by an earlier version keeps its rows: a per-instance table
        whose key lacks a column is rebuilt (see `_rebuild_if_key_changed`), and each
        column a table lacks is added with the default a new table would have (NULL,
        or 0 for counts), so old rows read as "none of that kind". A ledger made
        before time buckets existed gets them built from its events, once, so reports
        cover its history. Indexes and the view come last: they name new columns; full
        indexes an older version made where partial ones now stand are dropped.
        """
        had_buckets = bool(self._existing_columns(cur, buckets.TABLE))
        # The view reads the bucket table, which a rebuild below may drop.
        cur.execute(buckets.DROP_VIEW)
        for stmt in self.schema():
            cur.execute(stmt)
        for table in PER_INSTANCE_TABLES:
            self._rebuild_if_key_changed(cur, table)
        for table, wanted in self._columns_by_table().items():
            have = self._existing_columns(cur, table)
            for name, decl in wanted.items():
                if name not in have:
                    cur.execute(f"ALTER TABLE {table} ADD COLUMN {q(name)} {decl}")
        for name in OLD_INDEXES:
            cur.execute(f"DROP INDEX IF EXISTS {name}")
        for stmt in self.indexes():
            cur.execute(stmt)
        if not had_buckets:
            self._backfill_buckets(cur)
        cur.execute(buckets.create_view())

    def _rebuild_if_key_changed(self, cur: Any, table: str) -> None:
        """Copy a table whose primary key lacks a column (e.g. `instance`), or whose
        layout is not the one this version makes (see `_layout_outdated`), into a new one.

        A primary key cannot be altered in SQLite, so the table is rebuilt: create the
        new shape, copy every row (missing key columns become '', rows written before
        instances existed belong to no instance until a sidecar adopts them), drop
        the old, rename. The caller runs this inside the schema transaction, so a
        crash midway leaves the old table as it was.
        """
        keys, values = PER_INSTANCE_TABLES[table]
        have = self._existing_columns(cur, table)
        if not have:
            return
        if all(c in have for c in (INSTANCE, *keys)) and not self._layout_outdated(cur, table):
            return
        t0 = time.perf_counter()
        new = f"{table}_rebuild"
        cur.execute(f"DROP TABLE IF EXISTS {new}")
        cur.execute(self._per_instance_table(new, table))
        copied = ", ".join(q(c) for c in (*keys, *values) if c in have)
        instance = q(INSTANCE) if INSTANCE in have else f"'{UNASSIGNED_INSTANCE}'"
        cur.execute(
            f"INSERT INTO {new} ({q(INSTANCE)}, {copied}) SELECT {instance}, {copied} FROM {table}"
        )
        cur.execute(f"DROP TABLE {table}")
        cur.execute(f"ALTER TABLE {new} RENAME TO {table}")
        log.info(
            "ledger %s: rebuilt table %s in the current layout in %.1f s (once)",
            self.url,
            table,
            time.perf_counter() - t0,
        )

    def _layout_outdated(self, cur: Any, table: str) -> bool:
        """Whether an existing table has every column but not this version's layout."""
        return False

    def _move_instance_rows(self, cur: Any, where: str, params: Sequence[Any], to: str) -> int:
        """Add the rows matching `where` into instance `to`'s rows, then delete them.

        Sums per key, so moving never loses a count and never makes two rows of one key.
        Returns how many rows of the rollup table were moved.
        """
        ph = self.placeholder
        moved = 0
        for table, (keys, values) in PER_INSTANCE_TABLES.items():
            key_list = ", ".join(q(c) for c in keys)
            sums = ", ".join(f"sum({q(c)})" for c in values)
            updates = ", ".join(f"{q(c)} = {table}.{q(c)} + excluded.{q(c)}" for c in values)
            cur.execute(f"SELECT count(*) FROM {table} WHERE {where}", params)
            n = int(cur.fetchone()[0])
            if table == "rollup":
                moved = n
            if not n:
                continue
            # The WHERE before GROUP BY keeps SQLite from reading ON CONFLICT as a join.
            cur.execute(
                f"INSERT INTO {table} ({q(INSTANCE)}, {key_list}, "
                f"{', '.join(q(c) for c in values)}) "
                f"SELECT {ph}, {key_list}, {sums} FROM {table} WHERE {where} "
                f"GROUP BY {key_list} "
                f"ON CONFLICT ({q(INSTANCE)}, {key_list}) DO UPDATE SET {updates}",
                (to, *params),
            )
            cur.execute(f"DELETE FROM {table} WHERE {where}", params)
        return moved

    def _columns_by_table(self) -> dict[str, dict[str, str]]:
        """Column declarations that may be missing from a ledger made by an older version."""
        return {
            "events": {c: self._column_decl(c) for c in EVENT_COLUMNS},
            **{
                table: {c: f"{self.int_type} NOT NULL DEFAULT 0" for c in values}
                for table, (_, values) in PER_INSTANCE_TABLES.items()
            },
        }

    def _backfill_buckets(self, cur: Any) -> None:
        """Build the time buckets of a ledger that had none from its events, once.

        Each event's buckets go to the instance that holds its rollup row, as far as
        the events tell: events from before instances existed (instance '' or NULL)
        make unassigned buckets, which the opening sidecar adopts with the unassigned
        rollup rows in the same transaction; events of an instance that has no rollup
        rows any more (retired) go to the retired instance, where its rollup rows went.
        """
        cur.execute("SELECT count(*) FROM events")
        (n,) = cur.fetchone()
        if not n:
            return
        t0 = time.perf_counter()
        own = f"COALESCE({q(INSTANCE)}, '')"
        instance = (
            f"CASE WHEN {own} = '{UNASSIGNED_INSTANCE}' OR {own} IN "
            f"(SELECT {q(INSTANCE)} FROM rollup) THEN {own} ELSE '{RETIRED_INSTANCE}' END"
        )
        for step in STEPS.values():
            cur.execute(buckets.backfill_sql(step, self.floor_sql, self.int_type, instance))
        log.info(
            "ledger %s: built time buckets from %d existing events in %.1f s (once)",
            self.url,
            n,
            time.perf_counter() - t0,
        )

    def _column_decl(self, c: str) -> str:
        kind = self._column_type(c)
        if c in _NULLABLE:
            return kind
        return f"{kind} NOT NULL DEFAULT {0 if kind != 'TEXT' else chr(39) * 2}"

    def _column_type(self, c: str) -> str:
        if c in USAGE_FIELDS:
            return self.int_type
        if c in _REAL_COLUMNS:
            return self.real_type
        return "TEXT"

    def _existing_columns(self, cur: Any, table: str) -> set[str]:
        raise NotImplementedError

    # ---------------------------------------------------------------- hooks

    def _write_conn(self) -> Any:
        raise NotImplementedError

    def _read_conn(self) -> Any:
        raise NotImplementedError

    def _begin(self, cur: Any) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- writing

    def _existing_keys(self, cur: Any, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ", ".join([self.placeholder] * len(chunk))
            cur.execute(
                f"SELECT idempotency_key FROM events WHERE idempotency_key IN ({marks})", chunk
            )
            found.update(r[0] for r in cur.fetchall())
        return found

    def write(
        self,
        priced: Sequence[Priced],
        received_at: float,
        meta: Mapping[str, str] | None = None,
    ) -> WriteResult:
        """Commit the events not stored yet, their rollup and buckets, and `meta` rows.

        `meta` in the same transaction lets a reader save its position exactly with
        what it read (an import's checkpoint).
        """
        conn: Any = None
        try:
            conn = self._write_conn()
            cur = conn.cursor()
            self._begin(cur)
            inserted = self._insert_new(cur, priced, received_at)
            deltas, timed = aggregate_timed(
                p for p, new in zip(priced, inserted, strict=True) if new
            )
            if deltas:
                # Only this instance's rows: sidecars sharing a database never wait
                # for one another here (see postgres.py).
                me = self.instance
                cur.executemany(self._upsert_sql, [(me, *k, *v) for k, v in deltas.items()])
                cur.executemany(self._bucket_upsert_sql, [(me, *k, *v) for k, v in timed.items()])
            if meta:
                ph = self.placeholder
                cur.executemany(
                    f"INSERT INTO meta (key, value) VALUES ({ph}, {ph}) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    list(meta.items()),
                )
            conn.commit()
        except Exception as exc:
            try:
                if conn is not None:
                    conn.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; the write failed either way
                pass
            if isinstance(exc, LedgerError):
                raise
            raise LedgerError(
                f"ledger {self.url}: could not commit {len(priced)} events: {exc}"
            ) from exc
        return WriteResult(inserted, deltas)

    def _insert_new(self, cur: Any, priced: Sequence[Priced], received_at: float) -> list[bool]:
        """Insert the events not stored yet; per event, whether it was new.

        Needs the write lock `_begin` takes: the check and the insert are two statements.
        """
        keys = [e.idempotency_key for e, _ in priced if e.idempotency_key is not None]
        seen = self._existing_keys(cur, keys) if keys else set()
        inserted: list[bool] = []
        rows: list[tuple[Any, ...]] = []
        store_text, me = self.store_text, self.instance
        for e, c in priced:
            key = e.idempotency_key
            if key is not None:
                if key in seen:
                    inserted.append(False)
                    continue
                seen.add(key)
            inserted.append(True)
            rows.append(event_row(e, c, received_at, store_text, me))
        if rows:
            self._insert_events(cur, rows)
        return inserted

    def _insert_events(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows binding only their non-NULL columns.

        Most attribution and text columns are NULL in a typical event, and binding a
        parameter costs about as much as storing it: grouping a batch by which columns
        are present, and leaving the rest to the column default, halves the INSERT.
        """
        groups: dict[tuple[bool, ...], list[tuple[Any, ...]]] = {}
        for row in rows:
            present = tuple([v is not None for v in row])
            group = groups.get(present)
            if group is None:
                group = groups[present] = []
            group.append(row)
        for present, group in groups.items():
            sql, pick = self._insert_for(present)
            cur.executemany(sql, map(pick, group))

    def _insert_for(
        self, present: tuple[bool, ...]
    ) -> tuple[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]]:
        cached = self._insert_cache.get(present)
        if cached is None:
            idx = [i for i, p in enumerate(present) if p]
            cols = ", ".join(q(EVENT_COLUMNS[i]) for i in idx)
            sql = f"INSERT INTO events ({cols}) VALUES ({', '.join([self.placeholder] * len(idx))})"
            getter = itemgetter(*idx)
            pick = getter if len(idx) > 1 else (lambda row: (getter(row),))
            cached = self._insert_cache[present] = (sql, pick)
        return cached

    def check_writable(self, commit: bool = False) -> None:
        """Write and roll back a row, so a read-only, full or unreachable database shows up.

        With `commit`, the row is committed (one row, overwritten each time): a full disk
        refuses only what reaches it, and a rolled-back write never leaves the page cache.
        The recorder asks for that while its commits fail, to tell when they would pass.
        """
        conn: Any = None
        try:
            conn = self._write_conn()
            cur = conn.cursor()
            self._begin(cur)
            ph = self.placeholder
            if commit:
                cur.execute(
                    f"INSERT INTO meta (key, value) VALUES ({ph}, {ph}) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    ("readyz_probe", f"{time.time_ns()} {_PROBE_VALUE}"),
                )
                conn.commit()
                return
            cur.execute(
                f"INSERT INTO meta (key, value) VALUES ({ph}, {ph})",
                (f"readyz-{time.time_ns()}", _PROBE_VALUE),
            )
            conn.rollback()
        except Exception as exc:
            try:
                if conn is not None:
                    conn.rollback()
            except Exception:  # noqa: BLE001
                pass
            raise LedgerError(f"ledger {self.url} is not writable: {exc}") from exc

    # ---------------------------------------------------------------- reading

    def load_rollup(self) -> Iterator[tuple[RollupKey, Delta]]:
        """This instance's rollup rows: what its counters are rebuilt from."""
        nk = len(KEY_FIELDS)
        cols = ", ".join(q(c) for c in (*KEY_FIELDS, *VALUE_COLUMNS))
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(
                f"SELECT {cols} FROM rollup WHERE {q(INSTANCE)} = {self.placeholder}",
                (self.instance,),
            )
            rows = cur.fetchall()
        for row in rows:
            yield tuple(row[:nk]), list(row[nk:])

    def count_events(self) -> int:
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute("SELECT count(*) FROM events")
            (n,) = cur.fetchone()
        return int(n)

    def latest_event_ts(self) -> float | None:
        """The newest event's timestamp (epoch s), or None when there are none."""
        with self._read_lock:
            cur = self._read_conn().cursor()
            # max() over the indexed column reads one index entry, not the table.
            cur.execute("SELECT max(ts) FROM events")
            (ts,) = cur.fetchone()
        return None if ts is None else float(ts)

    def events(self) -> list[dict[str, Any]]:
        """Every stored event as a dict in commit order; for tests and exports.

        Within one PostgreSQL commit, rows are in idempotency-key order.
        """
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(f"SELECT {', '.join(q(c) for c in EVENT_COLUMNS)} FROM events ORDER BY id")
            rows = cur.fetchall()
        return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]

    def scope_instance(self, scope: str) -> str | None:
        """The instance whose rows a read in `scope` covers; None is every instance.

        "instance" is this ledger's own; "fleet" is every row of the ledger, retired
        instances' and unassigned ones included.
        """
        if scope == "instance":
            return self.instance
        if scope == "fleet":
            return None
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")

    def _instance_where(self, instance: str | None) -> tuple[str, tuple[Any, ...]]:
        """A WHERE condition keeping `instance`'s rows (None: all), and its parameters."""
        if instance is None:
            return "1 = 1", ()
        return f"{q(INSTANCE)} = {self.placeholder}", (instance,)

    def usage_since(
        self, since: float, field: str | None = None, value: str | None = None
    ) -> dict[str, tuple[int, float, int]]:
        """Tokens (input + output), dollars and calls of events at or after `since`.

        Grouped by `field` (an attribution column), or one group "" for everything;
        `value` keeps only that one group. Budgets read it so a restart does not reset them.
        """
        if field is not None and field not in EVENT_COLUMNS:
            raise ValueError(f"no event column {field!r}")
        ph = self.placeholder
        group = q(field) if field is not None else "''"
        where = f"ts >= {ph}"
        params: list[Any] = [since]
        if field is not None:
            where += f" AND {q(field)} IS NOT NULL"
            if value is not None:
                where += f" AND {q(field)} = {ph}"
                params.append(value)
        sql = (
            f"SELECT {group}, sum(input_tokens + output_tokens), sum(cost_total), count(*) "
            f"FROM events WHERE {where} GROUP BY 1"
        )
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(sql, params)
            rows = cur.fetchall()
        return {str(r[0]): (int(r[1] or 0), float(r[2] or 0.0), int(r[3])) for r in rows}

    def sender_costs(
        self, since: float, instance: str | None = None, limit: int = 100_000
    ) -> tuple[int, float, float]:
        """Events since `since` whose sender priced them itself (`metadata.sender_cost_usd`,
        as OTLP spans carry it): how many, their cost by the sender, and by our book.

        Read from the events (the rollups do not hold it), newest `limit` at most, so
        the JSON view can show how far senders' estimates are from ours.
        """
        where, params = self._instance_where(instance)
        ph = self.placeholder
        sql = (
            f"SELECT metadata, cost_total FROM events WHERE ts >= {ph} AND {where} "
            f"AND metadata LIKE {ph} ORDER BY ts DESC LIMIT {int(limit)}"
        )
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(sql, (since, *params, '%"sender_cost_usd"%'))
            rows = cur.fetchall()
        n, theirs, ours = 0, 0.0, 0.0
        for metadata, cost in rows:
            try:
                value = orjson.loads(metadata).get("sender_cost_usd")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                n += 1
                theirs += float(value)
                ours += float(cost or 0.0)
        return n, theirs, ours

    def bucket_sums(
        self,
        step: int,
        start: int,
        end: int,
        group_by: Sequence[str] = (),
        filters: Mapping[str, buckets.FilterValue] | None = None,
        instance: str | None = None,
        values: Sequence[str] = VALUE_COLUMNS,
    ) -> list[tuple[Any, ...]]:
        """Summed `values` columns of the `step` buckets in [start, end), per `group_by`.

        Each row is the group values followed by one integer per column of `values`
        (default VALUE_COLUMNS); with no matching bucket and no grouping, there are no
        rows. `instance` keeps one instance's buckets; None sums every instance's.
        """
        filters = filters or {}
        where, params = self._instance_where(instance)
        sql, ng = buckets.sums_sql(self.placeholder, group_by, filters, where, values)
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(sql, (step, start, end, *params, *buckets.filter_params(filters)))
            rows = cur.fetchall()
        return [(*r[:ng], *(int(v) for v in r[ng:])) for r in rows if r[ng] is not None]

    def summary(
        self,
        limit: int = 100,
        scope: str = "instance",
        model_name: Callable[[str, str], str] | None = None,
    ) -> dict[str, Any]:
        """Totals and breakdowns from the rollup table, with real (unfolded) label values.

        `scope` "instance" sums this instance's rows; "fleet" sums every row of the
        ledger, retired instances' included. `model_name` (the price book's
        `canonical_model`) makes `by_model` one row per model, as the reports have it.
        """
        where, params = self._instance_where(self.scope_instance(scope))
        sums = _SUMS
        out: dict[str, Any] = {}
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(f"SELECT {sums} FROM rollup WHERE {where}", params)
            out["totals"] = _sum_row(cur.fetchone())
            cur.execute(
                f"SELECT level, sum(requests) FROM rollup WHERE {where} GROUP BY level ORDER BY level",
                params,
            )
            out["by_level"] = {r[0]: int(r[1]) for r in cur.fetchall()}
            for name, dims in BREAKDOWNS.items():
                group = ", ".join(q(d) for d in dims)
                if name == "by_model" and model_name is not None:
                    cur.execute(
                        f"SELECT {group}, {sums} FROM rollup WHERE {where} GROUP BY {group}",
                        params,
                    )
                    merged = _merge_models(cur.fetchall(), model_name)
                    out[name] = [
                        {"provider": k[0], "model": k[1], **_sum_row(v)} for k, v in merged[:limit]
                    ]
                    if len(merged) > limit:
                        out[f"{name}_truncated"] = len(merged) - limit
                    continue
                cur.execute(
                    f"SELECT {group}, {sums} FROM rollup WHERE {where} GROUP BY {group} "
                    f"ORDER BY sum(requests) DESC, {group} LIMIT {int(limit) + 1}",
                    params,
                )
                rows = cur.fetchall()
                items = []
                for r in rows[:limit]:
                    entry = dict(zip(dims, r[: len(dims)], strict=True))
                    entry.update(_sum_row(r[len(dims) :]))
                    items.append(entry)
                out[name] = items
                if len(rows) > limit:
                    cur.execute(
                        f"SELECT count(*) FROM (SELECT 1 FROM rollup WHERE {where} "
                        f"GROUP BY {group}) AS g",
                        params,
                    )
                    out[f"{name}_truncated"] = int(cur.fetchone()[0]) - limit
            unpriced: list[dict[str, Any]] = []
            for reason, column in UNPRICED_COLUMNS.items():
                cur.execute(
                    f"SELECT provider, model, sum({q(column)}) FROM rollup WHERE {where} "
                    f"AND {q(column)} > 0 "
                    f"GROUP BY provider, model ORDER BY sum({q(column)}) DESC, provider, model "
                    f"LIMIT {int(limit)}",
                    params,
                )
                unpriced.extend(
                    {"provider": r[0], "model": r[1], "reason": reason, "requests": int(r[2])}
                    for r in cur.fetchall()
                )
            unpriced.sort(key=lambda u: (-u["requests"], u["provider"], u["model"], u["reason"]))
            out["unpriced_models"] = unpriced[:limit]
        return out

    def fleet_totals(self) -> dict[str, Any]:
        """Totals over every instance's rows, and requests per instance."""
        try:
            with self._read_lock:
                cur = self._read_conn().cursor()
                cur.execute(f"SELECT {_SUMS} FROM rollup")
                totals = _sum_row(cur.fetchone())
            return {"totals": totals, "instances": self.instances()}
        except LedgerError:
            raise
        except Exception as exc:
            # A database that is down answers the scrape with a 503, not a 500.
            raise LedgerError(f"ledger {self.url}: cannot read fleet totals: {exc}") from exc

    def instances(self) -> dict[str, int]:
        """Requests per instance in the rollup ('' is rows no sidecar has adopted yet)."""
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(
                f"SELECT {q(INSTANCE)}, sum(requests) FROM rollup "
                f"GROUP BY {q(INSTANCE)} ORDER BY {q(INSTANCE)}"
            )
            return {r[0]: int(r[1] or 0) for r in cur.fetchall()}

    def retire_instance(self, name: str) -> int:
        """Move instance `name`'s rollup rows into RETIRED_INSTANCE; returns rows moved.

        Fleet totals keep them; no live sidecar reports them any more. Retire only an
        instance whose sidecar is gone: a live one keeps counting them until it restarts.
        """
        if name == RETIRED_INSTANCE:
            raise LedgerError(f"{name!r} holds the retired rows already")
        conn = self._write_conn()
        try:
            cur = conn.cursor()
            self._begin_admin(cur)
            ph = self.placeholder
            moved = self._move_instance_rows(
                cur, f"{q(INSTANCE)} = {ph}", (name,), RETIRED_INSTANCE
            )
            conn.commit()
        except LedgerError:
            conn.rollback()
            raise
        except Exception as exc:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001
                pass
            raise LedgerError(f"ledger {self.url}: could not retire {name!r}: {exc}") from exc
        return moved

    def _begin_admin(self, cur: Any) -> None:
        """Begin a transaction that moves rows between instances."""
        self._begin(cur)

    # Adopting while the sidecar runs. `import` writes as a tool: unassigned rows, which
    # a sidecar adopted only when it opened the ledger, so an import into the ledger of
    # a running sidecar was in its JSON view (SQLite reads the whole file) and not in its
    # /metrics until a restart. Now, before it answers a read, the sidecar moves any
    # waiting rows into its instance in one transaction and adds exactly what it moved
    # to its counters: they only grow, nothing counts twice, and view and /metrics agree.

    def _unadopted_where(self) -> tuple[str, tuple[Any, ...]]:
        """The rows a running sidecar adopts: the unassigned ones, which only tools write.

        Never another sidecar's: two sidecars on one file (a mistake) would otherwise
        take each other's rows back and forth, each time counting them again.
        """
        return f"{q(INSTANCE)} = {self.placeholder}", (UNASSIGNED_INSTANCE,)

    def has_unadopted(self) -> bool:
        """Whether rows wait to be adopted: one indexed probe, cheap enough for each read."""
        if not self._adopts:
            return False
        where, params = self._unadopted_where()
        try:
            with self._read_lock:
                cur = self._read_conn().cursor()
                cur.execute(f"SELECT 1 FROM rollup WHERE {where} LIMIT 1", params)
                return cur.fetchone() is not None
        except Exception as exc:
            raise LedgerError(f"ledger {self.url}: cannot look for unassigned rows: {exc}") from exc

    def adopt_unadopted(self) -> list[tuple[RollupKey, Delta]]:
        """Move the waiting rows into this instance; returns what moved, summed per key.

        The caller holds the writer's lock and adds the sums to its counters.
        """
        if not self._adopts:
            return []
        where, params = self._unadopted_where()
        keys = ", ".join(q(c) for c in KEY_FIELDS)
        sums = ", ".join(f"sum({q(c)})" for c in VALUE_COLUMNS)
        conn = self._write_conn()
        try:
            cur = conn.cursor()
            # Serialises adopters: two sidecars sharing PostgreSQL must not both take them.
            self._begin_admin(cur)
            cur.execute(f"SELECT {keys}, {sums} FROM rollup WHERE {where} GROUP BY {keys}", params)
            rows = cur.fetchall()
            if rows:
                self._move_instance_rows(cur, where, params, self.instance)
            conn.commit()
        except Exception as exc:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - the connection is gone; exc says why
                pass
            raise LedgerError(f"ledger {self.url}: could not adopt unassigned rows: {exc}") from exc
        n = len(KEY_FIELDS)
        return [(tuple(r[:n]), [int(v or 0) for v in r[n:]]) for r in rows]

    def close(self) -> None:
        raise NotImplementedError


_NULLABLE = frozenset(
    (
        "idempotency_key",
        "error_type",
        "service_tier",
        "provider_cost_usd",
        "duration_ms",
        "ttft_ms",
        *ATTRIBUTION_FIELDS,
        "metadata",
        "prompt_text",
        "response_text",
        *QUERY_FIELDS,
    )
)


_NU = len(USAGE_FIELDS)
_NR = len(UNPRICED_COLUMNS)
# The sums `_sum_row` reads, in its order.
_SUMS = (
    "sum(requests), sum(CASE WHEN status = 'error' THEN requests ELSE 0 END), "
    + ", ".join(f"sum({q(c)})" for c in USAGE_FIELDS)
    + ", sum(cost_input_nusd), sum(cost_output_nusd), sum(cost_total_nusd), "
    + ", ".join(f"sum({q(c)})" for c in UNPRICED_COLUMNS.values())
    + ", sum(duration_count), sum(duration_sum_us)"
)


def _merge_models(
    rows: Sequence[Sequence[Any]], model_name: Callable[[str, str], str]
) -> list[tuple[tuple[str, str], list[int]]]:
    """(provider, model, *sums) rows summed per (provider, model's one name), most requests first."""
    acc: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        key = (str(r[0]), model_name(str(r[0]), str(r[1])))
        vec = acc.setdefault(key, [0] * (len(r) - 2))
        for i, v in enumerate(r[2:]):
            vec[i] += int(v or 0)
    return sorted(acc.items(), key=lambda kv: (-kv[1][0], kv[0]))


def _sum_row(r: Sequence[Any]) -> dict[str, Any]:
    """One row of `summary`'s sums: requests, errors, USAGE_FIELDS, costs, reasons, durations."""
    requests = int(r[0] or 0)
    errors = int(r[1] or 0)
    usage = {f: int(v or 0) for f, v in zip(USAGE_FIELDS, r[2 : 2 + _NU], strict=True)}
    at = 2 + _NU
    cost_in, cost_out, cost_total = (int(v or 0) / NANO for v in r[at : at + 3])
    at += 3
    reasons = {k: int(v or 0) for k, v in zip(UNPRICED_COLUMNS, r[at : at + _NR], strict=True)}
    at += _NR
    dur_count = int(r[at] or 0)
    dur_sum = int(r[at + 1] or 0) / 1000
    tokens = {f: usage[f] for f in USAGE_FIELDS if f.endswith("_tokens")}
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else 0.0,
        "tokens": {**tokens, "total_tokens": tokens["input_tokens"] + tokens["output_tokens"]},
        **{f: usage[f] for f in USAGE_FIELDS if not f.endswith("_tokens")},
        "cost_usd": {"input": cost_in, "output": cost_out, "total": cost_total},
        "unpriced_requests": reasons["unknown_model"],
        "approximately_priced_requests": {k: v for k, v in reasons.items() if k != "unknown_model"},
        "average_duration_ms": dur_sum / dur_count if dur_count else None,
        "average_cost_usd": cost_total / requests if requests else 0.0,
    }
