"""Instances sharing one ledger: per-instance rollups, fleet scope, retiring, migration."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from _pg import fresh_schema
from _server import exposition_samples, serve_app
from ai_usage_exporter import Recorder, UsageEvent
from ai_usage_exporter.cli.main import main
from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.settings import default_instance, resolve
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.core.rollup import INSTANCE, KEY_FIELDS, RETIRED_INSTANCE, VALUE_COLUMNS
from ai_usage_exporter.ledger import LedgerError, open_ledger
from ai_usage_exporter.server import create_app


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def _priced(tokens: int, key: str | None = None, service: str = "svc") -> tuple[UsageEvent, Cost]:
    e = UsageEvent(provider="openai", model="gpt-4o-mini", service=service,
                   input_tokens=tokens, output_tokens=1, idempotency_key=key)  # fmt: skip
    return e, Cost(tokens * 1e-6, 1e-6, tokens * 1e-6 + 1e-6, "genai-prices")


def _input_tokens(rows: Any) -> dict[str, int]:
    """Input tokens per service of (key, values) rollup rows."""
    out: dict[str, int] = {}
    for key, vec in rows:
        out[key[0]] = out.get(key[0], 0) + vec[VALUE_COLUMNS.index("input_tokens")]
    return out


def test_sidecars_sharing_postgresql_keep_their_own_rows(pg_url: str) -> None:
    a = open_ledger(pg_url, instance="pod-a")
    b = open_ledger(pg_url, instance="pod-b")
    try:
        assert a.write([_priced(10, "k1"), _priced(20, "k2")], 1.0).inserted == [True, True]
        # A retry of k2 that reached the other sidecar is a duplicate, and k3 is new.
        assert b.write([_priced(20, "k2"), _priced(5, "k3")], 2.0).inserted == [False, True]
        assert _input_tokens(a.load_rollup()) == {"svc": 30}
        assert _input_tokens(b.load_rollup()) == {"svc": 5}
        assert a.summary()["totals"]["tokens"]["input_tokens"] == 30
        assert a.summary(scope="fleet")["totals"]["tokens"]["input_tokens"] == 35
        assert b.instances() == {"pod-a": 2, "pod-b": 1}
        assert [r[INSTANCE] for r in a.events()] == ["pod-a", "pod-a", "pod-b"]
        with pytest.raises(ValueError, match="scope must be one of instance, fleet, got 'x'"):
            a.summary(scope="x")

        assert b.retire_instance("pod-a") == 1
        assert b.instances() == {"pod-b": 1, RETIRED_INSTANCE: 2}
        assert b.fleet_totals()["totals"]["tokens"]["input_tokens"] == 35
        # A second retirement adds to the same retired rows.
        assert a.write([_priced(1, "k4")], 3.0).inserted == [True]
        assert b.retire_instance("pod-a") == 1
        retired = b.summary(scope="fleet")
        assert retired["totals"]["requests"] == 4
        assert b.instances() == {"pod-b": 1, RETIRED_INSTANCE: 3}
        assert b.retire_instance("pod-gone") == 0
        with pytest.raises(LedgerError, match="holds the retired rows already"):
            b.retire_instance(RETIRED_INSTANCE)
    finally:
        a.close()
        b.close()


def test_concurrent_writers_with_overlapping_keys_store_each_event_once(pg_url: str) -> None:
    """Three writers commit the same keys at once in different orders: each stored once.

    Unordered, two such inserts wait for each other's keys and PostgreSQL aborts one
    as a deadlock. Rounds of 400 keys take the unnest path, of 600 the COPY path.
    """
    ledgers = [open_ledger(pg_url, instance=f"pod-{i}") for i in range(3)]
    inserted = [0, 0, 0]
    errors: list[BaseException] = []
    rounds = [[f"r{r}-{i:04d}" for i in range(n)] for r, n in enumerate((400, 600, 400, 600))]
    barrier = threading.Barrier(3)

    def run(i: int) -> None:
        try:
            for keys in rounds:
                order = [keys, keys[::-1], keys[len(keys) // 2 :] + keys[: len(keys) // 2]][i]
                batch = [_priced(1 + int(k.split("-")[1]), k) for k in order]
                barrier.wait(30)
                inserted[i] += sum(ledgers[i].write(batch, 1.0).inserted)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        assert sum(inserted) == 2000
        assert ledgers[0].count_events() == 2000
        per_instance = [sum(_input_tokens(ledger.load_rollup()).values()) for ledger in ledgers]
        assert sum(per_instance) == 2 * sum(range(1, 401)) + 2 * sum(range(1, 601))
        assert ledgers[0].fleet_totals()["totals"]["requests"] == 2000
    finally:
        for ledger in ledgers:
            ledger.close()


def test_a_sqlite_ledger_belongs_to_whoever_opens_it(tmp_path: Path) -> None:
    path = str(tmp_path / "one.db")
    with Recorder(path, CollectorRegistry(), instance="container-1") as r:
        r.record_many([{"provider": "openai", "model": "m", "input_tokens": 7}])
    # The container was replaced and its host name changed: the counters continue.
    with Recorder(path, CollectorRegistry(), instance="container-2") as r:
        samples = exposition_samples(r.exposition().decode())
        key = ("ai_tokens_total", frozenset({("type", "input"), ("service", "default"),
                                             ("provider", "openai"), ("model", "m")}))  # fmt: skip
        assert samples[key] == 7
        assert r.ledger.instances() == {"container-2": 1}
        with pytest.raises(LedgerError, match="is a SQLite file"):
            r.ledger.retire_instance("container-1")
    assert [e[INSTANCE] for e in open_ledger(path).events()] == ["container-1"]


def _old_rollup_ddl(int_type: str) -> str:
    keys = ", ".join(f'"{c}" TEXT NOT NULL' for c in KEY_FIELDS)
    values = ", ".join(f'"{c}" {int_type} NOT NULL DEFAULT 0' for c in VALUE_COLUMNS)
    pk = ", ".join(f'"{c}"' for c in KEY_FIELDS)
    return f"CREATE TABLE rollup ({keys}, {values}, PRIMARY KEY ({pk}))"


def _old_rows() -> list[tuple[Any, ...]]:
    blank = ["" for _ in KEY_FIELDS]
    a = ["svc-a", "openai", "m", "chat", "ok", "info", *blank[6:]]
    b = ["svc-b", "openai", "m", "chat", "ok", "info", *blank[6:]]
    return [(*a, 3, 300), (*b, 1, 100)]


def test_an_old_sqlite_ledger_is_rebuilt_with_instances(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(_old_rollup_ddl("INTEGER"))
    cols = ", ".join(f'"{c}"' for c in (*KEY_FIELDS, "requests", "input_tokens"))
    marks = ", ".join("?" for _ in range(len(KEY_FIELDS) + 2))
    conn.executemany(f"INSERT INTO rollup ({cols}) VALUES ({marks})", _old_rows())
    conn.commit()
    conn.close()

    ledger = open_ledger(str(path), instance="host-1")
    try:
        assert _input_tokens(ledger.load_rollup()) == {"svc-a": 300, "svc-b": 100}
        assert ledger.instances() == {"host-1": 4}
        pk = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(rollup)") if r[5]]
        assert pk == [INSTANCE, *KEY_FIELDS]
    finally:
        ledger.close()


def test_an_old_postgresql_ledger_is_adopted_by_the_first_sidecar(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(_old_rollup_ddl("BIGINT"))
        cols = ", ".join(f'"{c}"' for c in (*KEY_FIELDS, "requests", "input_tokens"))
        marks = ", ".join("%s" for _ in range(len(KEY_FIELDS) + 2))
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO rollup ({cols}) VALUES ({marks})", _old_rows())
    tool = open_ledger(pg_url)  # a tool's connection migrates but adopts nothing
    assert tool.instances() == {"": 4}
    first = open_ledger(pg_url, instance="pod-a")
    second = open_ledger(pg_url, instance="pod-b")
    try:
        assert _input_tokens(first.load_rollup()) == {"svc-a": 300, "svc-b": 100}
        assert list(second.load_rollup()) == []
        assert tool.instances() == {"pod-a": 4}
    finally:
        for ledger in (tool, first, second):
            ledger.close()


def test_several_sidecars_opening_a_new_database_at_once(pg_url: str) -> None:
    opened: list[Any] = []
    errors: list[BaseException] = []

    def open_one(i: int) -> None:
        try:
            opened.append(open_ledger(pg_url, instance=f"pod-{i}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for ledger in opened:
        ledger.close()
    assert errors == []
    assert len(opened) == 4


def test_scope_and_fleet_gauges_over_http(pg_url: str) -> None:
    with (
        Recorder(pg_url, CollectorRegistry(), instance="pod-a") as a,
        Recorder(pg_url, CollectorRegistry(), instance="pod-b") as b,
    ):
        a.record_many([{"provider": "openai", "model": "m", "input_tokens": 10, "output_tokens": 2,
                        "cost_usd": 0.5}])  # fmt: skip
        b.record_many([{"provider": "openai", "model": "m", "input_tokens": 3, "cost_usd": 0.25}])
        with serve_app(create_app(a)) as url:
            own = httpx.get(f"{url}/api/metrics").json()
            assert own["scope"] == "instance"
            assert own["exporter"]["instance"] == "pod-a"
            assert own["totals"]["tokens"]["input_tokens"] == 10
            assert "instances" not in own
            fleet = httpx.get(f"{url}/api/metrics", params={"scope": "fleet"}).json()
            assert fleet["totals"]["tokens"]["input_tokens"] == 13
            assert fleet["totals"]["cost_usd"]["total"] == 0.75
            assert fleet["instances"] == {"pod-a": 1, "pod-b": 1}

            bad = httpx.get(f"{url}/api/metrics", params={"scope": "everything"})
            assert bad.status_code == 400
            assert bad.json()["error"]["message"] == (
                "scope: must be one of instance, fleet, got 'everything'"
            )

            text = httpx.get(f"{url}/metrics/fleet").text
            assert (
                text
                == httpx.get(
                    f"{url}/api/metrics", params={"format": "prometheus", "scope": "fleet"}
                ).text
            )
            samples = exposition_samples(text)
            assert samples[("ai_fleet_requests", frozenset())] == 2
            assert samples[("ai_fleet_tokens", frozenset({("type", "input")}))] == 13
            assert samples[("ai_fleet_tokens", frozenset({("type", "total")}))] == 15
            assert samples[("ai_fleet_cost_usd", frozenset({("type", "total")}))] == 0.75
            assert samples[("ai_fleet_instances", frozenset())] == 2
            # The per-instance counters of pod-a hold pod-a's events only.
            own_samples = exposition_samples(httpx.get(f"{url}/metrics").text)
            assert sum(
                v for (n, labels), v in own_samples.items()
                if n == "ai_tokens_total" and ("type", "input") in labels
            ) == 10  # fmt: skip


def test_instance_settings(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("instance: from-file\n", encoding="utf-8")
    assert resolve({"config": str(config)}, {}).instance == "from-file"
    env = {"AI_USAGE_EXPORTER_INSTANCE": "from-env", "AI_USAGE_EXPORTER_CONFIG": str(config)}
    assert resolve({}, env).instance == "from-env"
    assert resolve({"instance": "from-flag"}, env).instance == "from-flag"
    assert resolve({}, {}).instance is None
    with pytest.raises(ConfigError, match="reserved for retired instances"):
        resolve({"instance": RETIRED_INSTANCE}, {})
    with pytest.raises(ConfigError, match="control characters"):
        resolve({"instance": "a\x07b"}, {})
    assert default_instance({"POD_NAME": "web-7d9f-x2", "HOSTNAME": "h"}) == "web-7d9f-x2"
    assert default_instance({"HOSTNAME": "web-7d9f-x2"}) == "web-7d9f-x2"
    assert default_instance({}) != ""


def test_instances_and_retire_commands(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = open_ledger(pg_url, instance="pod-a")
    ledger.write([_priced(1, "x"), _priced(2, "y")], 1.0)
    ledger.close()
    assert main(["instances", "--db", pg_url]) == 0
    assert capsys.readouterr().out == "pod-a\t2\n"
    assert main(["retire-instance", "pod-a", "--db", pg_url]) == 0
    assert capsys.readouterr().out == "retired 'pod-a': 1 rollup rows moved into '__retired__'\n"
    assert main(["retire-instance", "pod-a", "--db", pg_url]) == 1
    assert "instance 'pod-a' has no rows" in capsys.readouterr().err
    assert main(["instances", "--db", pg_url]) == 0
    assert capsys.readouterr().out == "__retired__\t2\n"
