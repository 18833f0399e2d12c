"""The partial indexes of the events table: an older ledger gets them, and reads use them.

Each case runs on SQLite and on a real PostgreSQL (AI_USAGE_EXPORTER_TEST_POSTGRES_URL;
without it the PostgreSQL cases skip, except in CI, where they fail).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _pg import fresh_schema
from ai_usage_exporter import UsageEvent
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.ledger import open_ledger
from ai_usage_exporter.ledger.base import SQLLedger
from ai_usage_exporter.ledger.queries import OLD_INDEXES

# Column -> the partial index that serves reads filtering on it.
PARTIAL = {
    "user": "events_user_ts_p",
    "query_id": "events_query_id_p",
    "session_id": "events_session_id_p",
    "workflow_id": "events_workflow_id_p",
}
OLD_DDL = [
    'CREATE INDEX events_user_ts ON events ("user", ts)',
    "CREATE INDEX events_query_id ON events (query_id)",
    "CREATE INDEX events_workflow_id ON events (workflow_id)",
    "CREATE INDEX events_session_id ON events (session_id)",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    with fresh_schema() as url:
        yield url


def _indexes(url: str) -> set[str]:
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url) as pg:
            rows = pg.execute(
                "SELECT indexname FROM pg_indexes "
                "WHERE schemaname = current_schema() AND tablename = 'events'"
            ).fetchall()
        return {r[0] for r in rows}
    with sqlite3.connect(url) as lite:
        rows = lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
        ).fetchall()
    return {r[0] for r in rows}


def _old_ledger(url: str) -> None:
    """A ledger as the previous version left it: full indexes on the sparse columns."""
    ledger = open_ledger(url)
    assert isinstance(ledger, SQLLedger)
    conn = ledger._write_conn()
    cur = conn.cursor()
    ledger._begin(cur)
    for name in PARTIAL.values():
        cur.execute(f"DROP INDEX {name}")
    for stmt in OLD_DDL:
        cur.execute(stmt)
    conn.commit()
    e = UsageEvent(provider="openai", model="m", input_tokens=1, user="u1", query_id="q1")
    ledger.write([(e, Cost(0.0, 0.0, 0.0, "genai-prices"))], received_at=1.0)
    ledger.close()


def test_an_older_ledger_trades_its_full_indexes_for_partial_ones(ledger_url: str) -> None:
    _old_ledger(ledger_url)
    assert set(OLD_INDEXES) <= _indexes(ledger_url)
    ledger = open_ledger(ledger_url)
    try:
        have = _indexes(ledger_url)
        assert not set(OLD_INDEXES) & have
        assert set(PARTIAL.values()) <= have
        assert {"events_idempotency_key", "events_ts"} <= have
        rows = ledger.select_events(("user", "query_id", "input_tokens"), {"user": "u1"})
        assert rows == [{"user": "u1", "query_id": "q1", "input_tokens": 1}]
    finally:
        ledger.close()


def _plan(ledger: SQLLedger, sql: str, params: tuple[Any, ...]) -> str:
    cur = ledger._read_conn().cursor()
    if ledger.placeholder == "%s":
        # An empty table is cheapest to scan whole; ask whether the index can be used.
        cur.execute("SET enable_seqscan = off")
        cur.execute("EXPLAIN " + sql, params)
        plan = "\n".join(str(r[0]) for r in cur.fetchall())
        cur.execute("RESET enable_seqscan")
        return plan
    cur.execute("EXPLAIN QUERY PLAN " + sql, params)
    return "\n".join(str(r[3]) for r in cur.fetchall())


def test_reads_by_a_sparse_column_use_its_partial_index(ledger_url: str) -> None:
    ledger = open_ledger(ledger_url)
    assert isinstance(ledger, SQLLedger)
    seen: list[tuple[str, tuple[Any, ...]]] = []
    fetch = ledger._fetch

    def recording(sql: str, params: tuple[Any, ...]) -> Any:
        seen.append((sql, params))
        return fetch(sql, params)

    ledger._fetch = recording  # type: ignore[method-assign]
    try:
        for column, index in PARTIAL.items():
            for kw in ({}, {"since": 1.0, "until": 2.0}, {"instance": "other"}):
                seen.clear()
                ledger.select_events(("ts",), {column: "x"}, **kw)
                ((sql, params),) = seen
                assert index in _plan(ledger, sql, params), sql
        # Budgets' per-key sums (usage_since) name the column IS NOT NULL themselves.
        ph = ledger.placeholder
        sql = (
            f'SELECT "user", count(*) FROM events WHERE ts >= {ph} AND "user" IS NOT NULL '
            f'AND "user" = {ph} GROUP BY 1'
        )
        assert PARTIAL["user"] in _plan(ledger, sql, (1.0, "x"))
    finally:
        ledger.close()
