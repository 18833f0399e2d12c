"""The same ledger behaviour on SQLite and on a real PostgreSQL.

PostgreSQL's URL comes from AI_USAGE_EXPORTER_TEST_POSTGRES_URL; without it the
PostgreSQL cases skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from _pg import fresh_schema
from _server import SampleKey, exposition_samples
from ai_usage_exporter import Recorder, UsageEvent
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.core.rollup import NANO
from ai_usage_exporter.ledger import Ledger, LedgerError, open_ledger
from ai_usage_exporter.ledger.base import SQLLedger
from ai_usage_exporter.ledger.sqlite import SQLiteLedger


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    with fresh_schema() as url:
        yield url


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
        # PostgreSQL stores a batch in key order (so concurrent writers cannot deadlock).
        rows = sorted(ledger.events(), key=lambda r: r["input_tokens"])
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


# Columns this version added for the usage-shape work; a ledger written before has none.
_NEW_EVENT_COLUMNS = (
    "cache_write_1h_tokens",
    "image_input_tokens",
    "image_output_tokens",
    "cached_audio_input_tokens",
    "cached_image_input_tokens",
    "video_input_tokens",
    "video_output_tokens",
    "cached_video_input_tokens",
    "web_search_requests",
    "cost_reason",
    "service_tier",
    "provider_cost_usd",
)
_NEW_ROLLUP_COLUMNS = (
    "cache_write_1h_tokens",
    "image_input_tokens",
    "image_output_tokens",
    "cached_audio_input_tokens",
    "cached_image_input_tokens",
    "video_input_tokens",
    "video_output_tokens",
    "cached_video_input_tokens",
    "web_search_requests",
    "unpriced_token_type",
    "unknown_tier",
)


def _old_schema_ledger(url: str) -> None:
    """A ledger as the previous version wrote it: without the new columns, with rows."""
    from ai_usage_exporter.core.rollup import KEY_FIELDS, VALUE_COLUMNS
    from ai_usage_exporter.ledger.base import EVENT_COLUMNS

    ledger = open_ledger(url)
    ledger.write([_priced(3, "old-1")], 1.0)
    ledger.write(
        [
            (
                UsageEvent(provider="x", model="nope", input_tokens=1),
                Cost(0, 0, 0, "unpriced", "unknown_model"),
            )
        ],
        1.0,
    )
    assert isinstance(ledger, SQLLedger)
    conn = ledger._write_conn()
    cur = conn.cursor()
    for c in _NEW_EVENT_COLUMNS:
        cur.execute(f'ALTER TABLE events DROP COLUMN "{c}"')
    for c in _NEW_ROLLUP_COLUMNS:
        cur.execute(f'ALTER TABLE rollup DROP COLUMN "{c}"')
    # A ledger from before time buckets: they are rebuilt from the events at open.
    cur.execute("DROP VIEW IF EXISTS usage_daily")
    cur.execute("DROP TABLE rollup_buckets")
    conn.commit()
    ledger.close()
    assert set(_NEW_EVENT_COLUMNS) <= set(EVENT_COLUMNS)
    assert set(_NEW_ROLLUP_COLUMNS) <= set(VALUE_COLUMNS) and KEY_FIELDS


def test_a_ledger_without_the_new_token_kinds_is_migrated_at_open(ledger_url: str) -> None:
    """Old rows read as none of the new kinds; new events with them are stored and summed."""
    _old_schema_ledger(ledger_url)
    ledger = open_ledger(ledger_url)
    try:
        (old, unpriced) = ledger.events()
        assert (old["input_tokens"], old["image_output_tokens"], old["web_search_requests"]) == (
            3,
            0,
            0,
        )
        assert (old["cost_reason"], old["service_tier"], old["provider_cost_usd"]) == (
            "",
            None,
            None,
        )
        assert unpriced["cost_source"] == "unpriced"
        e = UsageEvent(
            provider="google", model="gemini-2.5-flash", input_tokens=10, output_tokens=20,
            image_output_tokens=15, cache_write_1h_tokens=0, web_search_requests=2,
            cached_input_tokens=6, audio_input_tokens=4, cached_audio_input_tokens=3,
            video_input_tokens=2, service_tier="flex", idempotency_key="new-1",
        )  # fmt: skip
        ledger.write([(e, Cost(1e-6, 2e-6, 3e-6, "genai-prices", "unknown_tier"))], 2.0)
        summary = ledger.summary()
        assert summary["totals"]["tokens"]["image_output_tokens"] == 15
        assert summary["totals"]["tokens"]["cached_audio_input_tokens"] == 3
        assert summary["totals"]["tokens"]["video_input_tokens"] == 2
        assert summary["totals"]["web_search_requests"] == 2
        assert summary["totals"]["unpriced_requests"] == 1
        assert summary["totals"]["approximately_priced_requests"] == {
            "unpriced_token_type": 0,
            "unknown_tier": 1,
        }
        assert summary["unpriced_models"] == [
            {
                "provider": "google",
                "model": "gemini-2.5-flash",
                "reason": "unknown_tier",
                "requests": 1,
            },
            {"provider": "x", "model": "nope", "reason": "unknown_model", "requests": 1},
        ]
        new = ledger.events()[-1]
        assert (new["service_tier"], new["cost_reason"], new["image_output_tokens"]) == (
            "flex",
            "unknown_tier",
            15,
        )
        conn = ledger._write_conn()  # type: ignore[attr-defined]
        cur = conn.cursor()
        cur.execute(
            "SELECT sum(requests), sum(input_tokens), sum(unpriced), sum(unknown_tier), "
            "sum(image_output_tokens), sum(web_search_requests), sum(cached_audio_input_tokens) "
            "FROM rollup_buckets WHERE step = 60"
        )
        # Rebuilt from the two old events, then the new one added live.
        assert tuple(int(v) for v in cur.fetchone()) == (3, 14, 1, 1, 15, 2, 3)
        conn.rollback()
        widths = {len(v) for _, v in ledger.load_rollup()}
        from ai_usage_exporter.core.rollup import VALUE_COLUMNS

        assert widths == {len(VALUE_COLUMNS)}
    finally:
        ledger.close()


def _raw_execute(url: str, statements: list[str]) -> list[list[tuple[object, ...]]]:
    """Run SQL on the ledger's database behind the ledger's back; rows of each statement."""
    out: list[list[tuple[object, ...]]] = []
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            for stmt in statements:
                cur = pg.execute(stmt)
                out.append([tuple(r) for r in cur.fetchall()] if cur.description else [])
        return out
    lite = sqlite3.connect(url)
    try:
        for stmt in statements:
            out.append(list(lite.execute(stmt).fetchall()))
        lite.commit()
    finally:
        lite.close()
    return out


def test_a_ledger_from_before_instances_and_the_new_kinds_is_rebuilt_and_adopted(
    ledger_url: str,
) -> None:
    """Key rebuild, new value columns, bucket backfill and adoption in one open."""
    from ai_usage_exporter.core.metrics import render_fleet
    from ai_usage_exporter.core.rollup import INSTANCE, KEY_FIELDS, VALUE_COLUMNS

    _old_schema_ledger(ledger_url)
    # Older still: no instance in the rollup's key nor on the events.
    kept = ", ".join(
        f'"{c}"' for c in (*KEY_FIELDS, *VALUE_COLUMNS) if c not in _NEW_ROLLUP_COLUMNS
    )
    _raw_execute(
        ledger_url,
        [
            f"CREATE TABLE rollup_old AS SELECT {kept} FROM rollup",
            "DROP TABLE rollup",
            "ALTER TABLE rollup_old RENAME TO rollup",
            f'ALTER TABLE events DROP COLUMN "{INSTANCE}"',
        ],
    )
    ledger = open_ledger(ledger_url, instance="pod-a")
    try:
        rollup, buckets = _raw_execute(
            ledger_url,
            [
                f'SELECT "{INSTANCE}", sum(requests), sum(input_tokens), sum(unpriced), '
                f'sum(image_output_tokens), sum(unknown_tier) FROM rollup GROUP BY "{INSTANCE}"',
                f'SELECT "{INSTANCE}", sum(requests), sum(input_tokens), sum(unpriced), '
                f"sum(image_output_tokens) FROM rollup_buckets WHERE step = 86400 "
                f'GROUP BY "{INSTANCE}"',
            ],
        )
        # The unassigned rows (and the buckets built from the events) are pod-a's now.
        # PostgreSQL sums bigints as numeric: compare them as plain integers.
        plain = [[tuple(v if isinstance(v, str) else int(str(v)) for v in r) for r in t] for t in (rollup, buckets)]  # fmt: skip
        assert plain == [[("pod-a", 2, 4, 1, 0, 0)], [("pod-a", 2, 4, 1, 0)]]
        e = UsageEvent(
            provider="google", model="gemini-2.5-flash", input_tokens=10, output_tokens=20,
            image_output_tokens=15, web_search_requests=2, timestamp=86400.0 * 3,
        )  # fmt: skip
        cost = Cost(1e-6, 2e-6, 3e-6, "genai-prices", "unknown_tier")
        # Twice under one key: the instance-first primary key takes the upsert.
        ledger.write([(e, cost)], 2.0)
        ledger.write([(e, cost)], 3.0)
        (keyed,) = _raw_execute(
            ledger_url,
            [
                f'SELECT "{INSTANCE}", requests, image_output_tokens, web_search_requests, '
                "unknown_tier FROM rollup WHERE model = 'gemini-2.5-flash'"
            ],
        )
        assert [tuple(r) for r in keyed] == [("pod-a", 2, 30, 4, 2)]
        fleet = ledger.fleet_totals()
        assert fleet["totals"]["tokens"]["image_output_tokens"] == 30
        assert fleet["totals"]["web_search_requests"] == 4
        assert fleet["totals"]["approximately_priced_requests"]["unknown_tier"] == 2
        assert 'ai_fleet_tokens{type="image_output"} 30.0' in render_fleet(fleet)
        assert 'ai_fleet_server_tool_requests{type="web_search"} 4.0' in render_fleet(fleet)
        # Old events 3+6 and 1+0 tokens, the new one 10+20 twice.
        assert ledger.summary()["totals"]["tokens"]["total_tokens"] == 70
    finally:
        ledger.close()


def test_unpriced_models_by_reason_follow_the_scope() -> None:
    """Another sidecar's unpriced models show in the fleet scope only."""
    with fresh_schema() as pg_url:
        _unpriced_models_by_scope(pg_url)


def _unpriced_models_by_scope(pg_url: str) -> None:
    a = open_ledger(pg_url, instance="pod-a")
    b = open_ledger(pg_url, instance="pod-b")
    try:
        a.write([(UsageEvent(provider="x", model="nope", input_tokens=1), Cost(0, 0, 0, "unpriced", "unknown_model"))], 1.0)  # fmt: skip
        b.write([(UsageEvent(provider="google", model="g", input_tokens=1), Cost(0, 0, 0, "genai-prices", "unknown_tier"))], 1.0)  # fmt: skip
        mine = [{"provider": "x", "model": "nope", "reason": "unknown_model", "requests": 1}]
        theirs = [{"provider": "google", "model": "g", "reason": "unknown_tier", "requests": 1}]
        assert a.summary()["unpriced_models"] == mine
        assert b.summary(scope="instance")["unpriced_models"] == theirs
        assert a.summary(scope="fleet")["unpriced_models"] == [*theirs, *mine]
        # Retired rows keep their reasons in the fleet's list.
        assert a.retire_instance("pod-b") == 1
        assert a.summary(scope="fleet")["unpriced_models"] == [*theirs, *mine]
    finally:
        a.close()
        b.close()


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
