"""Gateway keys in the ledger: one row per key, stored as a hash, shared by a fleet.

Every sidecar on one PostgreSQL database (or one SQLite file) reads the same rows, so
a key made or revoked with `ai-usage-exporter keys` holds for the whole fleet. The
secret itself is never stored: `key_hash` is its SHA-256 and `key_prefix` its first
characters, enough for a person to tell keys apart in `keys list`.

A key's use in its budget period is read from the day buckets of the rollup (see
buckets.py), summed over every instance: a restart does not reset it, and another
sidecar's spend counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import orjson

TABLE = "gateway_keys"
DAY = 86400
NANO = 1_000_000_000

# Column -> declaration; `user` is quoted like every identifier (reserved in PostgreSQL).
COLUMNS: dict[str, str] = {
    "name": "TEXT PRIMARY KEY",
    "key_hash": "TEXT NOT NULL UNIQUE",
    "key_prefix": "TEXT NOT NULL",
    "tenant": "TEXT",
    "user": "TEXT",
    "service": "TEXT",
    # JSON lists; NULL allows every route / model.
    "routes": "TEXT",
    "models": "TEXT",
    # Whole nanodollars, like the rollup's money: a budget compares exactly with its sums.
    "budget_nusd": "{int}",
    "budget_tokens": "{int}",
    "period": "TEXT NOT NULL DEFAULT 'month'",
    "rpm": "{int}",
    "tpm": "{int}",
    "expires_at": "{real}",
    "created_at": "{real} NOT NULL",
    "updated_at": "{real} NOT NULL",
    "revoked_at": "{real}",
}
# What `keys update` may change; the name and the creation time stay.
UPDATABLE: frozenset[str] = frozenset(COLUMNS) - {"name", "created_at"}
_JSON_COLUMNS = frozenset(("routes", "models"))


def _q(name: str) -> str:
    return f'"{name}"'


def schema(int_type: str, real_type: str) -> str:
    cols = ",\n  ".join(
        f"{_q(c)} {d.format(int=int_type, real=real_type)}" for c, d in COLUMNS.items()
    )
    return f"CREATE TABLE IF NOT EXISTS {TABLE} (\n  {cols}\n)"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One gateway key as stored: who it stands for, what it may do, and its limits."""

    name: str
    key_hash: str
    key_prefix: str
    created_at: float
    updated_at: float
    tenant: str | None = None
    user: str | None = None
    service: str | None = None
    routes: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    budget_nusd: int | None = None
    budget_tokens: int | None = None
    period: str = "month"
    rpm: int | None = None
    tpm: int | None = None
    expires_at: float | None = None
    revoked_at: float | None = None

    @property
    def budget_usd(self) -> float | None:
        return None if self.budget_nusd is None else self.budget_nusd / NANO

    def row(self) -> tuple[Any, ...]:
        return tuple(_to_db(c, getattr(self, c)) for c in COLUMNS)

    def public(self) -> dict[str, Any]:
        """The record for `keys list` and JSON: everything but the hash."""
        out = {c: getattr(self, c) for c in COLUMNS if c not in ("key_hash", "budget_nusd")}
        out["budget_usd"] = self.budget_usd
        for c in _JSON_COLUMNS:
            if out[c] is not None:
                out[c] = list(out[c])
        return out


def _to_db(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS and value is not None:
        return orjson.dumps(list(value)).decode()
    return value


def _from_row(row: Sequence[Any]) -> KeyRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    for c in _JSON_COLUMNS:
        if values[c] is not None:
            values[c] = tuple(orjson.loads(values[c]))
    for c in ("budget_nusd", "budget_tokens", "rpm", "tpm"):
        if values[c] is not None:
            values[c] = int(values[c])
    for c in ("expires_at", "created_at", "updated_at", "revoked_at"):
        if values[c] is not None:
            values[c] = float(values[c])
    return KeyRecord(**values)


class KeyExists(Exception):
    """A key of that name is stored already."""


class KeyQueries:
    """Mixed into SQLLedger; uses its connections, lock and placeholder."""

    placeholder: str
    url: str
    _read_lock: AbstractContextManager[None]

    def _read_conn(self) -> Any:
        raise NotImplementedError

    def _write_conn(self) -> Any:
        raise NotImplementedError

    def _begin(self, cur: Any) -> None:
        raise NotImplementedError

    bucket_sums: Callable[..., list[tuple[Any, ...]]]

    def _select_keys(self, where: str, params: tuple[Any, ...]) -> list[KeyRecord]:
        cols = ", ".join(_q(c) for c in COLUMNS)
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(f"SELECT {cols} FROM {TABLE} WHERE {where} ORDER BY name", params)
            rows = cur.fetchall()
        return [_from_row(r) for r in rows]

    def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        """The key whose secret hashes to `key_hash`, revoked or not; None if there is none."""
        found = self._select_keys(f"key_hash = {self.placeholder}", (key_hash,))
        return found[0] if found else None

    def key_by_name(self, name: str) -> KeyRecord | None:
        found = self._select_keys(f"name = {self.placeholder}", (name,))
        return found[0] if found else None

    def list_keys(self) -> list[KeyRecord]:
        return self._select_keys("1 = 1", ())

    def count_keys(self) -> int:
        """Keys that are not revoked (expired ones included: they still close the gateway)."""
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(f"SELECT count(*) FROM {TABLE} WHERE revoked_at IS NULL")
            (n,) = cur.fetchone()
        return int(n)

    def insert_key(self, record: KeyRecord) -> None:
        """Store a new key; KeyExists if its name is taken (revoked keys keep their names)."""
        ph = self.placeholder
        cols = ", ".join(_q(c) for c in COLUMNS)
        conn = self._write_conn()
        try:
            cur = conn.cursor()
            self._begin(cur)
            cur.execute(f"SELECT 1 FROM {TABLE} WHERE name = {ph}", (record.name,))
            if cur.fetchone() is not None:
                conn.rollback()
                raise KeyExists(record.name)
            cur.execute(
                f"INSERT INTO {TABLE} ({cols}) VALUES ({', '.join([ph] * len(COLUMNS))})",
                record.row(),
            )
            conn.commit()
        except KeyExists:
            raise
        except BaseException:
            conn.rollback()
            raise

    def update_key(self, name: str, changes: Mapping[str, Any]) -> KeyRecord | None:
        """Set `changes` on key `name`; the updated record, or None if there is no such key."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"key columns that cannot be updated: {', '.join(sorted(unknown))}")
        ph = self.placeholder
        conn = self._write_conn()
        try:
            cur = conn.cursor()
            self._begin(cur)
            if changes:
                sets = ", ".join(f"{_q(c)} = {ph}" for c in changes)
                cur.execute(
                    f"UPDATE {TABLE} SET {sets} WHERE name = {ph}",
                    (*(_to_db(c, v) for c, v in changes.items()), name),
                )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return self.key_by_name(name)

    def key_usage(self, name: str, since: float, step: int = DAY) -> tuple[int, int, int]:
        """Tokens (input + output), nanodollars and calls of key `name` since `since`.

        From the `step` buckets (day by default) of every instance; a budget period
        begins at a UTC day's start, so day buckets cover it exactly. `since` is
        rounded down to its bucket.
        """
        start = int(since) - int(since) % step
        rows = self.bucket_sums(
            step,
            start,
            2**62,
            (),
            {"key": name},
            None,
            ("input_tokens", "output_tokens", "cost_total_nusd", "requests"),
        )
        if not rows:
            return 0, 0, 0
        inp, out, nusd, requests = rows[0]
        return int(inp) + int(out), int(nusd), int(requests)
