"""Reads of the events table for people: the calls themselves, and per-query sums.

Reports over keys read the time buckets (see buckets.py); these two need the
event rows, and indexes keep them fast: `query --user X --limit 10` walks the
(user, ts) index backwards and stops after ten rows.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

# Filters `select_events` takes: name -> events column.
EVENT_FILTERS: dict[str, str] = {
    "user": "user",
    "query_id": "query_id",
    "session_id": "session_id",
    "workflow_id": "workflow_id",
    "agent": "agent",
    "model": "model",
    "service": "service",
    "tenant": "tenant",
    "key": "key",
}

# Partial: most events carry no user, query, workflow or session, and a row a
# partial index leaves out costs nothing to insert. Every read of them names the
# column with `=` or IS NOT NULL, which implies the predicate on SQLite and PostgreSQL
# alike, so the planner still picks them (tests/test_ledger_indexes.py checks).
INDEXES: tuple[str, ...] = (
    'CREATE INDEX IF NOT EXISTS events_user_ts_p ON events ("user", ts) WHERE "user" IS NOT NULL',
    "CREATE INDEX IF NOT EXISTS events_query_id_p ON events (query_id) WHERE query_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_workflow_id_p ON events (workflow_id) "
    "WHERE workflow_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_session_id_p ON events (session_id) "
    "WHERE session_id IS NOT NULL",
)

# Full indexes of earlier versions that the partial ones above replace; dropped at open.
OLD_INDEXES: tuple[str, ...] = (
    "events_user_ts",
    "events_query_id",
    "events_workflow_id",
    "events_session_id",
)


QUERY_COLUMNS: tuple[str, ...] = (
    "query_id",
    "user",
    "first_ts",
    "last_ts",
    "inferences",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "duration_ms",
    "errors",
    "query_start",
    "query_end",
    "query_duration_ms",
    "query_text",
)


def _q(name: str) -> str:
    return f'"{name}"'


class EventQueries:
    """Mixed into SQLLedger; uses its read connection, lock and placeholder."""

    placeholder: str
    _read_lock: threading.Lock

    def _read_conn(self) -> Any:
        raise NotImplementedError

    def _instance_where(self, instance: str | None) -> tuple[str, tuple[Any, ...]]:
        raise NotImplementedError

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(sql, params)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return names, [tuple(r) for r in rows]

    def select_events(
        self,
        columns: tuple[str, ...],
        filters: Mapping[str, str],
        since: float | None = None,
        until: float | None = None,
        limit: int = 10,
        instance: str | None = None,
    ) -> list[dict[str, Any]]:
        """Events matching every filter, newest first; `instance` keeps the events it committed."""
        ph = self.placeholder
        where: list[str] = []
        params: list[Any] = []
        if instance is not None:
            cond, more = self._instance_where(instance)
            where.append(cond)
            params.extend(more)
        for name, value in filters.items():
            where.append(f"{_q(EVENT_FILTERS[name])} = {ph}")
            params.append(value)
        if since is not None:
            where.append(f"ts >= {ph}")
            params.append(since)
        if until is not None:
            where.append(f"ts < {ph}")
            params.append(until)
        sql = f"SELECT {', '.join(_q(c) for c in columns)} FROM events"
        if where:
            sql += f" WHERE {' AND '.join(where)}"
        sql += f" ORDER BY ts DESC, id DESC LIMIT {int(limit)}"
        names, rows = self._fetch(sql, tuple(params))
        return [dict(zip(names, r, strict=True)) for r in rows]

    def query_sums(
        self,
        since: float,
        until: float,
        order: str = "cost",
        limit: int = 10,
        instance: str | None = None,
    ) -> list[dict[str, Any]]:
        """Per query id in [since, until): its calls summed, the costliest (or largest) first.

        Also the query's own timing and text (issue 9's columns), as the query-summary
        line gave them, NULL when its events carried none. `instance` keeps the events
        that instance committed; None reads every event.
        """
        ph = self.placeholder
        cond, params = self._instance_where(instance)
        order_by = "cost_usd" if order == "cost" else "input_tokens + output_tokens"
        sql = (
            'SELECT query_id, max("user") AS "user", min(ts) AS first_ts, max(ts) AS last_ts, '
            "count(*) AS inferences, sum(input_tokens) AS input_tokens, "
            "sum(output_tokens) AS output_tokens, sum(cost_total) AS cost_usd, "
            "COALESCE(sum(duration_ms), 0) AS duration_ms, "
            "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, "
            "min(query_start) AS query_start, max(query_end) AS query_end, "
            "max(query_duration_ms) AS query_duration_ms, max(query_text) AS query_text "
            f"FROM events WHERE query_id IS NOT NULL AND ts >= {ph} AND ts < {ph} AND {cond} "
            f"GROUP BY query_id ORDER BY {order_by} DESC, query_id LIMIT {int(limit)}"
        )
        names, rows = self._fetch(sql, (since, until, *params))
        return [dict(zip(names, r, strict=True)) for r in rows]

    def count_events_before(self, ts: float) -> int:
        _, rows = self._fetch(f"SELECT count(*) FROM events WHERE ts < {self.placeholder}", (ts,))
        return int(rows[0][0])

    # ------------------------------------------------------------ maintenance

    def _write_conn(self) -> Any:
        raise NotImplementedError

    def _begin(self, cur: Any) -> None:
        raise NotImplementedError

    def _in_write(self, sql: str, params: tuple[Any, ...]) -> int:
        conn = self._write_conn()
        try:
            cur = conn.cursor()
            self._begin(cur)
            cur.execute(sql, params)
            n = cur.rowcount
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return int(n)

    def delete_events_before(self, ts: float, batch: int = 20_000) -> int:
        """Delete event rows older than `ts` in short transactions; rollups are untouched.

        Each batch holds the write lock briefly, so recording goes on meanwhile.
        """
        ph = self.placeholder
        sql = (
            f"DELETE FROM events WHERE id IN "
            f"(SELECT id FROM events WHERE ts < {ph} ORDER BY ts LIMIT {int(batch)})"
        )
        total = 0
        while True:
            n = self._in_write(sql, (ts,))
            total += n
            if n < batch:
                return total

    def delete_buckets_before(self, step: int, ts: float) -> int:
        """Delete time buckets of one step that start before `ts`, and note that they went.

        The note (see `buckets_pruned_before`) tells reports to read a wider step there.
        """
        from ai_usage_exporter.ledger.buckets import PRUNED_META, TABLE

        ph = self.placeholder
        cutoff = int(ts)
        key = PRUNED_META.format(step)
        conn = self._write_conn()
        try:
            cur = conn.cursor()
            self._begin(cur)
            cur.execute(f"DELETE FROM {TABLE} WHERE step = {ph} AND bucket < {ph}", (step, cutoff))
            n = cur.rowcount
            cur.execute(f"SELECT value FROM meta WHERE key = {ph}", (key,))
            row = cur.fetchone()
            if row is None or int(row[0]) < cutoff:
                cur.execute(
                    f"INSERT INTO meta (key, value) VALUES ({ph}, {ph}) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, str(cutoff)),
                )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return int(n)

    def buckets_pruned_before(self) -> dict[int, int]:
        """Step -> the time before which retention deleted that step's buckets (if it did)."""
        from ai_usage_exporter.ledger.buckets import PRUNED_META

        prefix = PRUNED_META.format("")
        _, rows = self._fetch(
            f"SELECT key, value FROM meta WHERE key LIKE {self.placeholder}", (prefix + "%",)
        )
        return {int(k[len(prefix) :]): int(v) for k, v in rows}

    def get_meta(self, key: str) -> str | None:
        _, rows = self._fetch(f"SELECT value FROM meta WHERE key = {self.placeholder}", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        ph = self.placeholder
        self._in_write(
            f"INSERT INTO meta (key, value) VALUES ({ph}, {ph}) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
