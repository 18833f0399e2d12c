"""SQLite ledger: one file in WAL mode, the embedded default."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from ai_usage_exporter.core.rollup import INSTANCE
from ai_usage_exporter.ledger import buckets
from ai_usage_exporter.ledger.base import LedgerError, SQLLedger, q

SYNCHRONOUS = ("full", "normal")

# Page cache of the writer's connection, in KiB (SQLite's default is 2 MiB). Event keys
# are hashes, so each insert lands at a random page of the unique key index (~80 bytes
# an event); with the default cache that page is usually read back from the OS first.
# Filled only as pages are used, so it costs memory only on a ledger that large.
WRITE_CACHE_KIB = 32 * 1024


def unwritable(path: Path) -> str | None:
    """Why SQLite could not write a ledger at `path`, found by trying; None if it can.

    SQLite itself only says "unable to open database file" or "attempt to write a
    readonly database". In WAL mode it also creates `-wal` and `-shm` files beside the
    ledger, so the directory must be writable too, not only the file.
    """
    fix = (
        f"make it writable by the user the sidecar runs as (uid {os.geteuid()}), "
        "or choose another path with --db"
    )
    parent = path.parent
    if path.is_dir():
        return f"{path} is a directory; give a file path such as {path / 'ai-usage.db'}"
    if not parent.is_dir():
        return f"{parent} is a file, not a directory; give a path in a directory"
    probe = parent / f".{path.name}.{os.getpid()}.probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        return (
            f"permission denied: cannot create files in directory {parent} ({exc.strerror}); "
            f"SQLite writes {path.name}-wal and {path.name}-shm beside the ledger: {fix}"
        )
    else:
        os.close(fd)
        probe.unlink()
    if path.exists():
        try:
            with open(path, "r+b"):
                pass
        except OSError as exc:
            return f"permission denied: cannot write the ledger file {path} ({exc.strerror}): {fix}"
    return None


class SQLiteLedger(SQLLedger):
    """Writes go through one connection owned by the writer thread; reads use another.

    `synchronous=full` (the default) fsyncs the WAL at every commit, so an acknowledged
    event survives power loss, not only a crash of the process; commits are grouped,
    so the fsync is paid once per group.

    A SQLite file is the ledger of the one sidecar that opens it (it cannot be shared
    across hosts), so at open it adopts every rollup and bucket row another instance
    name left (a container whose host name changed, rows from before instances
    existed): its counters continue across restarts whatever the instance is called,
    and its reads in the "instance" scope cover the whole file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        store_text: bool = False,
        instance: str | None = None,
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.path = Path(path)
        self.url = str(self.path)
        self.store_text = store_text
        super().__init__(instance)
        if self.path.parent and not self.path.parent.exists():
            raise LedgerError(
                f"cannot open ledger {self.url}: directory {self.path.parent} does not exist"
            )
        try:
            self._w = self._connect()
            self._w.execute("PRAGMA journal_mode=WAL")
            self._w.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._w.execute(f"PRAGMA cache_size=-{WRITE_CACHE_KIB}")
            # One transaction: a rebuild, the bucket backfill and the adoption happen whole or
            # not at all, and two processes opening one file do not interleave DDL.
            cur = self._w.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                self.create_schema(cur)
                if self._adopts:
                    self._move_instance_rows(
                        cur, f"{q(INSTANCE)} <> ?", (self.instance,), self.instance
                    )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._r = self._connect()
            # SQLite falls back to read-only on a file it may not write, and says so only
            # at the first write; find out now, not when the first event comes in.
            self.check_writable()
        except (sqlite3.Error, LedgerError) as exc:
            self.close()
            cause = unwritable(self.path)
            raise LedgerError(f"cannot open ledger {self.url}: {cause or exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE, which
        # takes the write lock up front so the duplicate check and the insert cannot race.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    clustered_buckets = True

    def _layout_outdated(self, cur: Any, table: str) -> bool:
        # Bucket tables made before they were clustered are ordinary rowid tables.
        if table != buckets.TABLE:
            return False
        cur.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        row = cur.fetchone()
        return row is not None and "WITHOUT ROWID" not in str(row[0]).upper()

    def _existing_columns(self, cur: Any, table: str) -> set[str]:
        cur.execute(f"PRAGMA table_info({table})")
        return {row[1] for row in cur.fetchall()}

    def _write_conn(self) -> sqlite3.Connection:
        return self._w

    def _read_conn(self) -> sqlite3.Connection:
        return self._r

    def _begin(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def _instance_where(self, instance: str | None) -> tuple[str, tuple[Any, ...]]:
        # The file is the ledger of the sidecar that opened it: its own scope is all of
        # it, events committed under an earlier host name and rows a tool wrote since
        # (an import) included. A tool naming an instance gets that instance's rows.
        if self._adopts and instance == self.instance:
            return "1 = 1", ()
        return super()._instance_where(instance)

    def retire_instance(self, name: str) -> int:
        raise LedgerError(
            f"ledger {self.url} is a SQLite file: it belongs to the one sidecar that opens it, "
            "which adopts every instance's rows at start, so there is nothing to retire"
        )

    def close(self) -> None:
        for conn in (getattr(self, "_w", None), getattr(self, "_r", None)):
            if conn is not None:
                conn.close()
