"""The closed-bucket cache: what it reads again, and what makes it forget."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ai_usage_exporter import Recorder
from ai_usage_exporter.core.timeseries import parse_query
from ai_usage_exporter.recorder.bucketcache import BucketCache

STEP = 60
T0 = 1_800_000_000 // STEP * STEP


class Store:
    """Bucket rows (bucket, value), recording every range read."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {T0 + i * STEP: i + 1 for i in range(200)}
        self.reads: list[tuple[int, int]] = []

    def fetch(self, start: int, end: int) -> list[tuple[Any, ...]]:
        self.reads.append((start, end))
        return [(b, v) for b, v in sorted(self.values.items()) if start <= b < end]

    def expected(self, start: int, end: int) -> list[tuple[Any, ...]]:
        return [(b, v) for b, v in sorted(self.values.items()) if start <= b < end]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_closed_buckets_are_read_once_and_the_open_ones_every_time() -> None:
    store, cache = Store(), BucketCache(grace=120)
    now = T0 + 100 * STEP + 30  # bucket 100 is open; 98 and 99 end within the grace
    start, end = T0 + 40 * STEP, T0 + 101 * STEP
    for _ in range(3):
        assert cache.sums("k", STEP, start, end, now, store.fetch) == store.expected(start, end)
    closed = T0 + 98 * STEP
    assert store.reads == [(start, closed), (closed, end), (closed, end), (closed, end)]

    # A minute later the window slides: one more bucket closes and is read once.
    store.reads.clear()
    now, start, end = now + STEP, start + STEP, end + STEP
    assert cache.sums("k", STEP, start, end, now, store.fetch) == store.expected(start, end)
    assert store.reads == [(closed, closed + STEP), (closed + STEP, end)]


def test_a_commit_into_a_cached_bucket_makes_it_read_again() -> None:
    store, cache = Store(), BucketCache(grace=120)
    now = T0 + 100 * STEP + 30
    start, end = T0 + 40 * STEP, T0 + 101 * STEP
    cache.sums("k", STEP, start, end, now, store.fetch)
    # An event timed in the open buckets changes nothing cached.
    cache.note_commit(now - 10)
    store.reads.clear()
    cache.sums("k", STEP, start, end, now, store.fetch)
    assert store.reads == [(T0 + 98 * STEP, end)]
    # A late one, timed in a closed bucket, does.
    store.values[T0 + 50 * STEP] += 1000
    cache.note_commit(T0 + 50 * STEP + 5)
    store.reads.clear()
    assert cache.sums("k", STEP, start, end, now, store.fetch) == store.expected(start, end)
    assert store.reads == [(start, T0 + 98 * STEP), (T0 + 98 * STEP, end)]


def test_entries_expire_and_forgotten_commits_count_as_changes() -> None:
    store, clock = Store(), Clock()
    cache = BucketCache(grace=120, max_age=300, log_size=4, clock=clock)
    now = T0 + 100 * STEP + 30
    start, end = T0 + 40 * STEP, T0 + 101 * STEP
    cache.sums("k", STEP, start, end, now, store.fetch)
    clock.now = 301.0
    store.reads.clear()
    cache.sums("k", STEP, start, end, now, store.fetch)
    assert store.reads[0] == (start, T0 + 98 * STEP)
    # More commits than the log remembers: whether one was late is unknown.
    for _ in range(5):
        cache.note_commit(now)
    store.reads.clear()
    cache.sums("k", STEP, start, end, now, store.fetch)
    assert store.reads[0] == (start, T0 + 98 * STEP)


def test_a_wider_window_reads_only_what_the_narrower_one_lacks() -> None:
    store, cache = Store(), BucketCache(grace=0)
    now = T0 + 100 * STEP
    cache.sums("k", STEP, T0 + 85 * STEP, T0 + 101 * STEP, now, store.fetch)
    store.reads.clear()
    start = T0 + 40 * STEP
    assert cache.sums("k", STEP, start, T0 + 101 * STEP, now, store.fetch) == store.expected(
        start, T0 + 101 * STEP
    )
    assert store.reads == [(start, T0 + 85 * STEP), (now, T0 + 101 * STEP)]
    store.reads.clear()
    cache.sums("k", STEP, T0 + 85 * STEP, T0 + 101 * STEP, now, store.fetch)
    assert store.reads == [(now, T0 + 101 * STEP)]


def test_recorder_series_show_a_late_event_after_the_cache_is_warm(tmp_path: Path) -> None:
    now = time.time()
    recorder = Recorder(str(tmp_path / "ledger.db"), CollectorRegistry())
    event = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5}
    try:
        recorder.record_many([{**event, "timestamp": now - 3 * 3600}])
        query = parse_query({"metric": ["requests"], "step": ["1h"], "from": ["6h"]}, now)
        first = recorder.timeseries(query)
        assert sum(first["series"][0]["values"]) == 1
        # Two hours ago: a bucket the cache holds as closed.
        recorder.record_many([{**event, "timestamp": now - 2 * 3600}])
        second = recorder.timeseries(query)
        assert sum(second["series"][0]["values"]) == 2
        assert second["timestamps"] == first["timestamps"]
    finally:
        recorder.close()
