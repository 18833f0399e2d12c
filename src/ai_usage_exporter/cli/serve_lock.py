"""One `serve` per SQLite file: a second one refuses to start, naming the first.

A SQLite file is one sidecar's ledger: each sidecar that opens it adopts every row and
rebuilds its counters from the whole file, so two would each report the same events
to Prometheus (a fleet's sum would count them twice) and contend for one write lock.
Tools (`import`, `report`) may run beside it; only `serve` takes this lock.

The lock is an flock on a file beside the ledger (`<db>.serve.lock`), held for the
process's life and released by the kernel however it ends, so a crash leaves no stale
lock. It is a separate file because SQLite's own POSIX locks on the ledger must not be
touched (on some filesystems flock and POSIX locks are the same lock).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ai_usage_exporter.ledger import LedgerError

IN_USE = (
    "another `serve` (pid {pid}) is using the SQLite ledger {db}: a SQLite file is one "
    "sidecar's ledger, and two would each count its events in their /metrics. Stop it, "
    "give this one its own --db, or share a PostgreSQL ledger between sidecars "
    "(README: A fleet on one PostgreSQL)"
)


def sqlite_path(db: str) -> str | None:
    """The file a `--db` names, or None for a PostgreSQL URL."""
    if db.startswith(("postgresql://", "postgres://")):
        return None
    return db[len("sqlite:///") :] if db.startswith("sqlite:///") else db


def hold(db: str) -> IO[str] | None:
    """Take the ledger's serve lock for this process; raise LedgerError if it is taken.

    Returns the open lock file (keep it open while serving), or None when there is
    nothing to lock: a PostgreSQL ledger, or a directory the ledger's own open will
    report on.
    """
    path = sqlite_path(db)
    if path is None:
        return None
    try:
        lock = open(Path(f"{path}.serve.lock"), "a+", encoding="utf-8")  # noqa: SIM115
    except OSError:
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid = lock.read().strip() or "unknown"
        lock.close()
        raise LedgerError(IN_USE.format(pid=pid, db=path)) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
