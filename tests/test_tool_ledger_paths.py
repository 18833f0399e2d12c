"""Commands that only read a ledger never create one: a mistyped --db fails, naming it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from _pg import fresh_schema
from ai_usage_exporter.ledger import LedgerError, open_ledger

READERS = (
    ("report", "daily"),
    ("query",),
    ("instances",),
    ("retire-instance", "web-1"),
    ("prune", "--older-than", "90d"),
)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}
    return subprocess.run(
        [sys.executable, "-m", "ai_usage_exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean,
    )


@pytest.mark.parametrize("command", READERS, ids=lambda c: c[0])
def test_a_mistyped_sqlite_path_fails_and_creates_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    typo = tmp_path / "ai-usgae.db"
    result = _cli(*command, "--db", str(typo))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"ai-usage-exporter: no ledger at {typo}: the file does not exist. Check --db (or "
        "AI_USAGE_EXPORTER_DB, or db: in the config); `serve` and `import` create a ledger, "
        "the other commands only read one\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_ledger_is_named_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    conn.close()
    with pytest.raises(LedgerError) as info:
        open_ledger(str(other), must_exist=True)
    assert str(info.value) == (
        f"no ledger at {other}: the file has no events table (it is not an ai-usage-exporter "
        "ledger). Check --db (or AI_USAGE_EXPORTER_DB, or db: in the config)"
    )
    with sqlite3.connect(other) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    conn.close()
    assert tables == ["notes"]


def test_an_existing_ledger_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ai-usage.db"
    open_ledger(str(path)).close()
    result = _cli("query", "--db", str(path), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_a_postgres_schema_without_a_ledger_is_named() -> None:
    with fresh_schema() as url:
        schema = url.rsplit("search_path%3D", 1)[1]
        with pytest.raises(LedgerError) as info:
            open_ledger(url, must_exist=True)
        assert str(info.value) == (
            f"no ledger at {url}: schema {schema!r} has no events table. Check --db (or "
            "AI_USAGE_EXPORTER_DB, or db: in the config) and the search_path it sets"
        )
        import psycopg

        with psycopg.connect(url) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            ).fetchall()
        assert tables == []
        # Once a sidecar made it, the tools read it.
        open_ledger(url, instance="web-1").close()
        open_ledger(url, must_exist=True).close()


def test_a_postgres_search_path_naming_no_schema_is_named() -> None:
    with fresh_schema() as url:
        missing = url.replace("search_path%3Dt_", "search_path%3Dmissing_")
        schema = missing.rsplit("search_path%3D", 1)[1]
        with pytest.raises(LedgerError) as info:
            open_ledger(missing, must_exist=True)
        assert str(info.value) == (
            f"no ledger at {missing}: schema {schema!r} does not exist. Check --db (or "
            "AI_USAGE_EXPORTER_DB, or db: in the config) and the search_path it sets"
        )


def test_prune_refuses_older_than_with_before(tmp_path: Path) -> None:
    path = tmp_path / "ai-usage.db"
    open_ledger(str(path)).close()
    result = _cli(
        "prune", "--older-than", "90d", "--before", "2026-01-01", "--db", str(path), "--dry-run"
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "ai-usage-exporter prune: error: argument --before: not allowed with argument --older-than"
    )
