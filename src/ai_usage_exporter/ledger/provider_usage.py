"""What the providers say they billed, as fetched by `reconcile`: one row per
provider, UTC day, scope, model and billing kind, with tokens and whole nanodollars.

A fetch covers whole days. Storing it replaces every row of those days (and
scopes) in one transaction, so a day the provider restated holds only the new
figures, and storing the same fetch twice leaves the table as it was.
`provider_usage_days` records which days a fetch covered (an empty day is a fact
too: nothing billed) and whether the provider may still restate them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

TABLE = "provider_usage"
DAYS_TABLE = "provider_usage_days"
# The billing kinds a row may have. Token kinds are disjoint (unlike the event's,
# where input_tokens includes cache reads): each is billed at a rate of its own.
KINDS: tuple[str, ...] = (
    "uncached_input",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "audio_input",
    "image_input",
    "output",
    "audio_output",
    "image_output",
    "web_search",  # quantity counts searches, not tokens
    "other",  # billed with no token count we compare (storage, tool sessions...)
)
ORGANIZATION = ""  # the scope of an organization-wide fetch


@dataclass(frozen=True, slots=True)
class ProviderUsage:
    """One provider-reported figure: tokens (or searches) and what they cost."""

    provider: str
    day: int  # epoch seconds of the UTC day's start
    scope: str  # ORGANIZATION, or "project:<id>", "api_key:<id>", "workspace:<id>"
    model: str  # as the provider names it, snapshot date and all
    kind: str  # one of KINDS
    quantity: int
    cost_nusd: int


_COLUMNS = ("provider", "day", "scope", "model", "kind", "quantity", "cost_nusd")


def schema(int_type: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {TABLE} (\n"
        "  provider TEXT NOT NULL,\n"
        f"  day {int_type} NOT NULL,\n"
        "  scope TEXT NOT NULL DEFAULT '',\n"
        "  model TEXT NOT NULL,\n"
        "  kind TEXT NOT NULL,\n"
        f"  quantity {int_type} NOT NULL DEFAULT 0,\n"
        f"  cost_nusd {int_type} NOT NULL DEFAULT 0,\n"
        "  PRIMARY KEY (provider, day, scope, model, kind)\n)",
        f"CREATE TABLE IF NOT EXISTS {DAYS_TABLE} (\n"
        "  provider TEXT NOT NULL,\n"
        f"  day {int_type} NOT NULL,\n"
        "  scope TEXT NOT NULL DEFAULT '',\n"
        f"  final {int_type} NOT NULL DEFAULT 0,\n"
        "  PRIMARY KEY (provider, day, scope)\n)",
    ]


class StoreError(Exception):
    """Provider usage could not be stored; nothing of the fetch was kept."""


class ProviderUsageStore:
    """Mixed into SQLLedger: store and read provider-reported usage."""

    placeholder: str
    url: str
    _read_lock: AbstractContextManager[None]

    def _write_conn(self) -> Any:
        raise NotImplementedError

    def _read_conn(self) -> Any:
        raise NotImplementedError

    def _begin(self, cur: Any) -> None:
        raise NotImplementedError

    def replace_provider_usage(
        self,
        provider: str,
        days: Mapping[int, bool],
        scopes: Sequence[str],
        rows: Iterable[ProviderUsage],
    ) -> int:
        """Replace `provider`'s rows of `days` (day -> final) in `scopes` with `rows`.

        One transaction; returns the rows stored. Rows outside `days` or `scopes` are
        refused, so a fetch can never overwrite what it did not cover.
        """
        rows = list(rows)
        for r in rows:
            if r.provider != provider or r.day not in days or r.scope not in scopes:
                raise ValueError(f"row {r} is outside the fetched days and scopes")
        ph = self.placeholder
        conn = self._write_conn()
        try:
            cur = conn.cursor()
            self._begin(cur)
            marks = ", ".join([ph] * len(scopes))
            for day in sorted(days):
                for table in (TABLE, DAYS_TABLE):
                    cur.execute(
                        f"DELETE FROM {table} WHERE provider = {ph} AND day = {ph} "
                        f"AND scope IN ({marks})",
                        (provider, day, *scopes),
                    )
            cur.executemany(
                f"INSERT INTO {DAYS_TABLE} (provider, day, scope, final) VALUES ({ph}, {ph}, {ph}, {ph})",
                [(provider, d, s, int(f)) for d, f in sorted(days.items()) for s in scopes],
            )
            if rows:
                cur.executemany(
                    f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join([ph] * len(_COLUMNS))})",
                    [
                        (r.provider, r.day, r.scope, r.model, r.kind, r.quantity, r.cost_nusd)
                        for r in rows
                    ],
                )
            conn.commit()
        except Exception as exc:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - the write failed either way
                pass
            raise StoreError(f"ledger {self.url}: could not store {provider} usage: {exc}") from exc
        return len(rows)

    def provider_usage(
        self, provider: str, start: int, end: int
    ) -> tuple[list[ProviderUsage], dict[tuple[int, str], bool]]:
        """`provider`'s rows of the days in [start, end), and the days fetched.

        The second value maps (day, scope) to whether that day is final.
        """
        ph = self.placeholder
        with self._read_lock:
            cur = self._read_conn().cursor()
            cur.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} "
                f"WHERE provider = {ph} AND day >= {ph} AND day < {ph} "
                "ORDER BY day, scope, model, kind",
                (provider, start, end),
            )
            rows = [_row(r) for r in cur.fetchall()]
            cur.execute(
                f"SELECT day, scope, final FROM {DAYS_TABLE} "
                f"WHERE provider = {ph} AND day >= {ph} AND day < {ph}",
                (provider, start, end),
            )
            days = {(int(r[0]), str(r[1])): bool(r[2]) for r in cur.fetchall()}
        return rows, days


def _row(r: Sequence[Any]) -> ProviderUsage:
    return ProviderUsage(
        str(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]), int(r[6])
    )
