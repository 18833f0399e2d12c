"""Reads of the events table for people: the calls themselves, and per-query sums.

Reports over keys read the time buckets (see buckets.py); these two need the
event rows, and indexes keep them fast: `query --user X --limit 10` walks the
(user, ts) index backwards and stops after ten rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ai_usage_exporter.core.rollup import NANO
from ai_usage_exporter.ledger.buckets import FilterValue, filter_sql

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
    "timed_inferences",
    "timed_tokens",
)


def _q(name: str) -> str:
    return f'"{name}"'


class EventQueries:
    """Mixed into SQLLedger; uses its read connection, lock and placeholder."""

    placeholder: str
    int_type: str
    floor_sql: str
    _read_lock: AbstractContextManager[None]

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

    def _event_where(
        self,
        filters: Mapping[str, FilterValue],
        since: float | None,
        until: float | None,
        instance: str | None,
    ) -> tuple[str, list[Any]]:
        """WHERE (with the keyword, or '') for events matching every filter, and its params."""
        ph = self.placeholder
        where: list[str] = []
        params: list[Any] = []
        if instance is not None:
            cond, own = self._instance_where(instance)
            where.append(cond)
            params.extend(own)
        for name, value in filters.items():
            cond, more = filter_sql(ph, _q(EVENT_FILTERS[name]), value)
            where.append(cond)
            params.extend(more)
        if since is not None:
            where.append(f"ts >= {ph}")
            params.append(since)
        if until is not None:
            where.append(f"ts < {ph}")
            params.append(until)
        return (f" WHERE {' AND '.join(where)}" if where else ""), params

    def select_events(
        self,
        columns: tuple[str, ...],
        filters: Mapping[str, FilterValue],
        since: float | None = None,
        until: float | None = None,
        limit: int = 10,
        instance: str | None = None,
    ) -> list[dict[str, Any]]:
        """Events matching every filter, newest first; `instance` keeps the events it committed."""
        where, params = self._event_where(filters, since, until, instance)
        sql = f"SELECT {', '.join(_q(c) for c in columns)} FROM events{where}"
        sql += f" ORDER BY ts DESC, id DESC LIMIT {int(limit)}"
        names, rows = self._fetch(sql, tuple(params))
        return [dict(zip(names, r, strict=True)) for r in rows]

    def count_events_matching(
        self,
        filters: Mapping[str, FilterValue],
        since: float | None = None,
        until: float | None = None,
        instance: str | None = None,
    ) -> int:
        """How many events `select_events` would list without a limit."""
        where, params = self._event_where(filters, since, until, instance)
        _, rows = self._fetch(f"SELECT count(*) FROM events{where}", tuple(params))
        return int(rows[0][0])

    def event_sums(
        self,
        since: float,
        until: float,
        group_by: Sequence[str],
        filters: Mapping[str, FilterValue],
        instance: str | None = None,
        values: Sequence[str] = (),
    ) -> list[tuple[Any, ...]]:
        """What `bucket_sums` gives, summed from the events in [since, until) instead.

        For a filter the buckets cannot answer (the user, which is no bucket key): the
        same arithmetic as the writer's (costs rounded to nanodollars per event), so the
        rows equal the buckets' for the same events; only retained events count.
        `group_by` may name "bucket", the UTC day.
        """
        timed = "duration_ms IS NOT NULL"
        cost = (
            f"CAST(round(cost_input * {NANO}) AS {self.int_type}) + "
            f"CAST(round(cost_output * {NANO}) AS {self.int_type})"
        )
        dur = f"COALESCE(sum(CAST(round(duration_ms * 1000) AS {self.int_type})), 0)"
        exprs = {
            "requests": "count(*)",
            "cost_total_nusd": f"sum({cost})",
            "duration_count": "count(duration_ms)",
            "duration_sum_us": dur,
            "timed_requests": "count(duration_ms)",
            "timed_tokens": f"sum(CASE WHEN {timed} THEN input_tokens + output_tokens ELSE 0 END)",
            "timed_cost_nusd": f"sum(CASE WHEN {timed} THEN {cost} ELSE 0 END)",
            "timed_duration_us": dur,
            "unpriced": "sum(CASE WHEN cost_source = 'unpriced' THEN 1 ELSE 0 END)",
        }
        day = self.floor_sql.format("ts / 86400") + " * 86400"
        group = [day if c == "bucket" else f"COALESCE({_q(c)}, '')" for c in group_by]
        sums = [exprs.get(c, f"sum({_q(c)})") for c in values]
        where, params = self._event_where(filters, since, until, instance)
        sql = f"SELECT {', '.join([*group, *sums])} FROM events{where}"
        if group:
            sql += f" GROUP BY {', '.join(str(i + 1) for i in range(len(group)))}"
        _, rows = self._fetch(sql, tuple(params))
        ng = len(group)
        return [(*r[:ng], *(int(v or 0) for v in r[ng:])) for r in rows if r[ng]]

    def served_models(self) -> list[tuple[str, str]]:
        """Every (provider, model) the rollup holds: the names a model was served under."""
        _, rows = self._fetch("SELECT DISTINCT provider, model FROM rollup", ())
        return [(str(p), str(m)) for p, m in rows]

    def query_sums(
        self,
        since: float,
        until: float,
        order: str = "cost",
        limit: int = 10,
        instance: str | None = None,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[dict[str, Any]]:
        """Per query id in [since, until): its calls summed, the costliest (or largest) first.

        Also the query's own timing and text (issue 9's columns), as the query-summary
        line gave them, NULL when its events carried none. `instance` keeps the events
        that instance committed; None reads every event. `filters` keep the events
        matching each (see EVENT_FILTERS).
        """
        ph = self.placeholder
        cond, params = self._instance_where(instance)
        more, extra = self._event_where(filters or {}, None, None, None)
        if more:
            cond += " AND " + more.removeprefix(" WHERE ")
            params = (*params, *extra)
        # The sums, spelt out: in an expression a name is the events column, not the
        # output alias, so `input_tokens + output_tokens` would be one row's values
        # (SQLite) or an error (PostgreSQL).
        order_by = (
            "sum(cost_total)" if order == "cost" else "sum(input_tokens) + sum(output_tokens)"
        )
        sql = (
            'SELECT query_id, max("user") AS "user", min(ts) AS first_ts, max(ts) AS last_ts, '
            "count(*) AS inferences, sum(input_tokens) AS input_tokens, "
            "sum(output_tokens) AS output_tokens, sum(cost_total) AS cost_usd, "
            "COALESCE(sum(duration_ms), 0) AS duration_ms, "
            "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, "
            "min(query_start) AS query_start, max(query_end) AS query_end, "
            "max(query_duration_ms) AS query_duration_ms, max(query_text) AS query_text, "
            "count(duration_ms) AS timed_inferences, "
            "sum(CASE WHEN duration_ms IS NOT NULL THEN input_tokens + output_tokens ELSE 0 END) "
            "AS timed_tokens "
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
