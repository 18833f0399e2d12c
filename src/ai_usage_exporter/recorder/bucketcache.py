"""Bucket sums of closed time buckets, kept between requests so a polling chart reads
only the buckets that can still change.

A dashboard asks for the same range every few seconds; over 7 or 30 days that is a
hundred thousand bucket rows summed again each time, of which only the newest bucket
moved. A bucket is closed once `grace` seconds have passed since its end; its rows are
kept until this process commits an event that falls in the cached range (the writer
tells `note_commit`), or `max_age` passes, which bounds what another process writing
to a shared ledger late can leave unseen.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

Row = tuple[Any, ...]
Fetch = Callable[[int, int], Sequence[Row]]


@dataclass(slots=True)
class _Entry:
    seq: int  # the last commit noted before the rows were read
    lo: int  # the closed buckets held: [lo, hi), each with its rows (none when idle)
    hi: int
    buckets: dict[int, list[Row]]
    rows: int
    made: float


class BucketCache:
    """Closed buckets' rows per query shape; each row starts with its bucket (epoch s)."""

    def __init__(
        self,
        *,
        grace: float = 120.0,
        max_age: float = 300.0,
        max_entries: int = 64,
        max_rows: int = 200_000,
        log_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace = grace
        self.max_age = max_age
        self.max_entries = max_entries
        self.max_rows = max_rows
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._seq = 0
        # (seq, oldest event time) of recent commits; older ones are forgotten, and an
        # entry older than what is remembered is read again.
        self._log: deque[tuple[int, float]] = deque(maxlen=log_size)

    def note_commit(self, oldest_ts: float) -> None:
        """The writer committed events, the oldest of them timed `oldest_ts`."""
        with self._lock:
            self._seq += 1
            self._log.append((self._seq, oldest_ts))

    def _untouched(self, entry: _Entry) -> bool:
        if self._clock() - entry.made > self.max_age:
            return False
        if entry.seq == self._seq:
            return True
        if not self._log or self._log[0][0] > entry.seq + 1:
            return False  # commits since the entry were forgotten
        for seq, oldest in reversed(self._log):
            if seq <= entry.seq:
                break
            if oldest < entry.hi:
                return False
        return True

    def sums(
        self, key: Hashable, step: int, start: int, end: int, now: float, fetch: Fetch
    ) -> list[Row]:
        """Rows of the buckets in [start, end): closed ones from the cache, the rest fetched."""
        closed_end = max(start, min(end, int((now - self.grace) // step) * step))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and not self._untouched(entry):
                entry = None
            seq = self._seq
        if entry is None or closed_end <= entry.lo or start >= entry.hi:
            # Nothing cached overlaps: hold this range alone.
            entry = _Entry(seq, start, start, {}, 0, self._clock())
        else:
            entry = _Entry(seq, entry.lo, entry.hi, dict(entry.buckets), entry.rows, entry.made)
        if closed_end > start:
            if start < entry.lo:
                self._add(entry, fetch(start, entry.lo))
                entry.lo = start
            if closed_end > entry.hi:
                self._add(entry, fetch(entry.hi, closed_end))
                entry.hi = closed_end
        rows: list[Row] = []
        for b in range(start, closed_end, step):
            rows += entry.buckets.get(b, ())
        with self._lock:
            if entry.rows <= self.max_rows:
                self._entries[key] = entry
                self._entries.move_to_end(key)
            else:
                self._entries.pop(key, None)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        if end > closed_end:
            rows += fetch(closed_end, end)
        return rows

    @staticmethod
    def _add(entry: _Entry, rows: Sequence[Row]) -> None:
        for r in rows:
            entry.buckets.setdefault(int(r[0]), []).append(r)
        entry.rows += len(rows)
