from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from _server import exposition_samples
from ai_usage_exporter import EventError, Recorder, UsageEvent
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.ledger import Ledger, LedgerError, SQLiteLedger, WriteResult


def _event(i: int, **kw: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "service": f"svc{i % 3}",
        "input_tokens": 100 + i,
        "output_tokens": 10 + i,
        "duration_ms": 50.0 * (i % 7),
        **kw,
    }


def _ai_samples(recorder: Recorder) -> dict[Any, float]:
    return {
        k: v
        for k, v in exposition_samples(recorder.exposition().decode()).items()
        if not k[0].startswith("ai_exporter_")
    }


def test_record_flush_and_counters_equal_the_ledger(tmp_path: Path) -> None:
    with Recorder(str(tmp_path / "l.db"), CollectorRegistry()) as r:
        for i in range(50):
            r.record(_event(i))
        r.flush()
        rows = r.ledger.events()
        s = exposition_samples(r.exposition().decode())
    assert len(rows) == 50
    assert sum(row["input_tokens"] for row in rows) == sum(100 + i for i in range(50))
    inputs = sum(
        v
        for (name, labels), v in s.items()
        if name == "ai_tokens_total" and ("type", "input") in labels
    )
    assert inputs == sum(100 + i for i in range(50))
    assert s[("ai_exporter_events_accepted_total", frozenset())] == 50.0


def test_counters_survive_a_restart_exactly(tmp_path: Path) -> None:
    db = str(tmp_path / "l.db")
    with Recorder(db, CollectorRegistry()) as r:
        r.record_many(
            [
                _event(
                    i,
                    tenant=f"t{i % 4}",
                    ttft_ms=12.5 * i,
                    status="error" if i % 5 == 0 else "ok",
                    web_search_requests=i % 3,
                )
                for i in range(200)
            ]
        )
        before = _ai_samples(r)
        searches = {
            labels: v
            for (name, labels), v in before.items()
            if name == "ai_server_tool_requests_total"
        }
        # svc0 gets i = 0, 3, 6, ...: web searches i % 3 = 0 every time.
        assert sorted((dict(k)["service"], v) for k, v in searches.items()) == [
            ("svc0", 0.0),
            ("svc1", sum(i % 3 for i in range(1, 200, 3))),
            ("svc2", sum(i % 3 for i in range(2, 200, 3))),
        ]
        view_before = r.view()
    with Recorder(db, CollectorRegistry()) as r2:
        after = _ai_samples(r2)
        view_after = r2.view()
    assert after == before
    assert view_after["totals"] == view_before["totals"]
    assert view_after["by_tenant"] == view_before["by_tenant"]


def test_duplicates_are_acknowledged_and_counted_once_also_after_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "l.db")
    events = [_event(i, idempotency_key=f"k{i}") for i in range(10)]
    with Recorder(db, CollectorRegistry()) as r:
        assert r.record_many(events).accepted == 10
        # Repeated within one request too: the first wins.
        res = r.record_many(
            [_event(99, idempotency_key="k-new"), _event(98, idempotency_key="k-new")]
        )
        assert (res.accepted, res.duplicates) == (1, 1)
        before = _ai_samples(r)
    with Recorder(db, CollectorRegistry()) as r2:
        res = r2.record_many(events)
        assert (res.accepted, res.duplicates) == (0, 10)
        assert _ai_samples(r2) == before
        assert r2.ledger.count_events() == 11


def test_many_threads_at_once(tmp_path: Path) -> None:
    with Recorder(str(tmp_path / "l.db"), CollectorRegistry()) as r:
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for j in range(20):
                    r.record_many(
                        [
                            _event(t * 1000 + j * 10 + k, idempotency_key=f"{t}-{j}-{k}")
                            for k in range(10)
                        ]
                    )
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        s = _ai_samples(r)
        requests = sum(v for (name, _), v in s.items() if name == "ai_requests_total")
        assert requests == 8 * 20 * 10
        assert r.ledger.count_events() == 1600


def test_invalid_event_raises_and_records_nothing(tmp_path: Path) -> None:
    with Recorder(str(tmp_path / "l.db"), CollectorRegistry()) as r:
        with pytest.raises(EventError, match="prompt_token"):
            r.record(provider="openai", model="m", prompt_token=3)
        with pytest.raises(EventError):
            r.record_many([_event(1), {"provider": "p"}])
        r.flush()
        assert r.ledger.count_events() == 0


def test_never_touches_the_global_registry(tmp_path: Path) -> None:
    before = set(REGISTRY._names_to_collectors)  # noqa: SLF001 - checking the global stays untouched
    with Recorder(str(tmp_path / "l.db")) as r:
        r.record_many([_event(1)])
        assert r.registry is not REGISTRY
    assert set(REGISTRY._names_to_collectors) == before  # noqa: SLF001


def test_usage_event_objects_are_accepted(tmp_path: Path) -> None:
    with Recorder(str(tmp_path / "l.db"), CollectorRegistry()) as r:
        r.record(
            UsageEvent(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=500)
        )
        r.flush()
        (row,) = r.ledger.events()
    assert (row["cost_input"], row["cost_output"], row["cost_total"]) == pytest.approx(
        (0.00015, 0.0003, 0.00045), abs=1e-12
    )
    assert row["cost_source"] == "genai-prices"


class FlakyLedger:
    """A real SQLite ledger whose writes fail while `failing` is set."""

    def __init__(self, path: Path) -> None:
        self.inner = SQLiteLedger(path)
        self.url = self.inner.url
        self.failing = True

    def write(
        self,
        priced: Sequence[tuple[UsageEvent, Cost]],
        received_at: float,
        meta: Mapping[str, str] | None = None,
    ) -> WriteResult:
        if self.failing:
            raise LedgerError("disk full (simulated)")
        return self.inner.write(priced, received_at, meta)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failed_commit_acknowledges_nothing_and_changes_no_counter(tmp_path: Path) -> None:
    ledger = FlakyLedger(tmp_path / "l.db")
    typed: Ledger = ledger
    with Recorder(typed, CollectorRegistry()) as r:
        before = _ai_samples(r)
        with pytest.raises(LedgerError, match="disk full"):
            r.record_many([_event(1)])
        assert _ai_samples(r) == before
        assert r.writer_error is not None
        # A queued (fire-and-forget) event is kept and retried until the ledger recovers.
        r.record(_event(2))
        ledger.failing = False
        r.flush(timeout=10)
        assert r.writer_error is None
        (row,) = r.ledger.events()
        assert row["input_tokens"] == 102


def test_a_built_event_gets_the_same_checks_as_a_posted_one(tmp_path: Path) -> None:
    with Recorder(str(tmp_path / "l.db"), CollectorRegistry()) as r:
        with pytest.raises(EventError, match="model: is not valid UTF-8"):
            r.record(UsageEvent(provider="p", model="\ud800"))
        with pytest.raises(EventError, match="input_tokens: must be >= 0, got -1"):
            r.record_many([UsageEvent(provider="p", model="m", input_tokens=-1)])
        r.record(UsageEvent(provider="p", model="m", level="warn", tenant="t", metadata={"a": 1}))
        # Defaults follow the posted-event rules: a failed call is logged at error level.
        r.record(UsageEvent(provider="p", model="m", status="error"))
        r.flush(timeout=10)
        first, second = r.ledger.events()
        assert (first["level"], first["tenant"], first["metadata"]) == ("warn", "t", '{"a":1}')
        assert (second["status"], second["level"]) == ("error", "error")
