"""The same ledger behaviour on SQLite and on a real PostgreSQL.

PostgreSQL's URL comes from AI_USAGE_EXPORTER_TEST_POSTGRES_URL; without it the
PostgreSQL cases skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry

from _server import SampleKey, exposition_samples
from ai_usage_exporter import Recorder, UsageEvent
from ai_usage_exporter.ledger import Ledger, LedgerError, open_ledger
from ai_usage_exporter.ledger.sqlite import SQLiteLedger
from ai_usage_exporter.pricing import Cost
from ai_usage_exporter.rollup import NANO

PG_ENV = "AI_USAGE_EXPORTER_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    base = os.environ.get(PG_ENV)
    if not base:
        message = f"{PG_ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _priced(i: int, key: str | None = None, **kw: object) -> tuple[UsageEvent, Cost]:
    e = UsageEvent(provider="openai", model="gpt-4o-mini", input_tokens=i, output_tokens=2 * i,
                   idempotency_key=key, user="u\"ser", metadata={"k": [1, "two"]}, duration_ms=12.5, **kw)  # type: ignore[arg-type]  # fmt: skip
    return e, Cost(i * 1e-6, i * 2e-6, i * 3e-6, "genai-prices")


def test_write_dedupe_rollup_and_rows(ledger_url: str) -> None:
    ledger: Ledger = open_ledger(ledger_url)
    try:
        r1 = ledger.write([_priced(1, "a"), _priced(2, "b"), _priced(3, "a"), _priced(4)], 1000.0)
        assert r1.inserted == [True, True, False, True]
        r2 = ledger.write([_priced(5, "b"), _priced(6, "c")], 1001.0)
        assert r2.inserted == [False, True]
        rows = ledger.events()
        assert [(r["idempotency_key"], r["input_tokens"]) for r in rows] == [
            ("a", 1),
            ("b", 2),
            (None, 4),
            ("c", 6),
        ]
        assert rows[0]["user"] == 'u"ser'
        assert rows[0]["metadata"] == '{"k":[1,"two"]}'
        assert rows[0]["cost_total"] == pytest.approx(3e-6)
        (key, vec), *rest = list(ledger.load_rollup())
        assert rest == []
        assert key[:6] == ("default", "openai", "gpt-4o-mini", "chat", "ok", "info")
        assert vec[0] == 4  # requests
        assert vec[1] == 1 + 2 + 4 + 6  # input tokens
        summary = ledger.summary()
        assert summary["totals"]["requests"] == 4
        assert summary["totals"]["cost_usd"]["total"] == round(13 * 3e-6 * NANO) / NANO
        assert summary["totals"]["average_duration_ms"] == 12.5
        assert summary["by_model"] == [
            {"provider": "openai", "model": "gpt-4o-mini", **summary["totals"]}
        ]
        ledger.check_writable()
        assert ledger.count_events() == 4
    finally:
        ledger.close()


def test_recorder_restart_on_each_ledger(ledger_url: str) -> None:
    events = [{"provider": "anthropic", "model": "claude-sonnet-4-20250514", "agent": f"a{i % 2}",
               "usage": {"input_tokens": 10 * i, "cache_read_input_tokens": i, "output_tokens": i},
               "idempotency_key": f"k{i}", "duration_ms": 100.0 + i} for i in range(30)]  # fmt: skip
    with Recorder(ledger_url, CollectorRegistry()) as r:
        assert r.record_many(events).accepted == 30
        before = exposition_samples(r.exposition().decode())
        view = r.view()
    with Recorder(ledger_url, CollectorRegistry()) as r2:
        assert r2.record_many(events).duplicates == 30
        after = exposition_samples(r2.exposition().decode())
        assert r2.view()["by_agent"] == view["by_agent"]
    assert _without_exporter(after) == _without_exporter(before)
    assert {e["agent"]: e["requests"] for e in view["by_agent"]} == {"a0": 15, "a1": 15}


def _without_exporter(samples: dict[SampleKey, float]) -> dict[SampleKey, float]:
    return {k: v for k, v in samples.items() if not k[0].startswith("ai_exporter_")}


def test_unsupported_url_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="unsupported ledger URL 'mysql://x'"):
        open_ledger("mysql://x")
    with pytest.raises(LedgerError, match="does not exist"):
        open_ledger(str(tmp_path / "no" / "such" / "dir" / "l.db"))


def test_a_ledger_from_an_older_version_gains_new_columns(tmp_path: Path) -> None:
    """Columns added by a later version are added to an existing file, and old rows stay."""
    path = tmp_path / "old.db"
    ledger = SQLiteLedger(path)
    ledger.close()
    conn = sqlite3.connect(path)
    # Stand in for an older schema: drop one event column and one rollup column.
    conn.execute(
        "INSERT INTO events (ts, received_at, provider, model, operation, service, "
        "status, level, input_tokens, output_tokens, cached_input_tokens, "
        "cache_write_tokens, reasoning_tokens, audio_input_tokens, audio_output_tokens, "
        "cost_input, cost_output, cost_total, cost_source) VALUES "
        "(1, 1, 'openai', 'm', 'chat', 'default', 'ok', 'info', 5, 6, 0, 0, 0, 0, 0, "
        "0, 0, 0, 'unpriced')"
    )
    conn.execute("ALTER TABLE events DROP COLUMN audio_output_tokens")
    conn.execute("ALTER TABLE rollup DROP COLUMN ttft_b3")
    conn.commit()
    conn.close()

    reopened = SQLiteLedger(path)
    try:
        rows = reopened.events()
        assert [
            (r["input_tokens"], r["output_tokens"], r["audio_output_tokens"]) for r in rows
        ] == [(5, 6, 0)]
        cols = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(rollup)")}
        assert "ttft_b3" in cols
    finally:
        reopened.close()


def test_an_older_ledger_gains_the_query_columns(ledger_url: str) -> None:
    """A ledger made before the query columns existed gets them at open, on both dialects."""
    query_columns = ("query_start", "query_end", "query_duration_ms", "query_text")
    ledger = open_ledger(ledger_url)
    ledger.write([_priced(1, "before")], received_at=1.0)
    ledger.close()
    if ledger_url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(ledger_url, autocommit=True) as pg:
            for c in query_columns:
                pg.execute(f"ALTER TABLE events DROP COLUMN {c}")
    else:
        lite = sqlite3.connect(ledger_url)
        for c in query_columns:
            lite.execute(f"ALTER TABLE events DROP COLUMN {c}")
        lite.commit()
        lite.close()

    reopened = open_ledger(ledger_url, store_text=True)
    try:
        event, cost = _priced(2, "after")
        event.query_start, event.query_end = 1_768_923_000.0, 1_768_923_005.0
        event.query_duration_ms, event.query_text = 5200.0, "hola"
        reopened.write([(event, cost)], received_at=2.0)
        rows = [{c: r[c] for c in ("idempotency_key", *query_columns)} for r in reopened.events()]
    finally:
        reopened.close()
    assert rows == [
        {"idempotency_key": "before", **dict.fromkeys(query_columns)},
        {
            "idempotency_key": "after",
            "query_start": 1_768_923_000.0,
            "query_end": 1_768_923_005.0,
            "query_duration_ms": 5200.0,
            "query_text": "hola",
        },
    ]
