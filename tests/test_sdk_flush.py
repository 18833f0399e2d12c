"""flush() is True only when the events were acknowledged, and stats() accounts for
every event: queued (or being sent), delivered, or dropped with a reason."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from _sdk import reset_sdk
from _server import serve_app
from ai_usage_exporter import Recorder, configure, flush, track_token_usage_sync
from ai_usage_exporter.sdk import stats
from ai_usage_exporter.server.app import create_app


def _record(n: int = 1) -> None:
    for _ in range(n):
        track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 1})


def _accounted(s: dict[str, Any]) -> int:
    return int(s["queued"] + s["delivered"] + sum(s["dropped"].values()))


def test_a_refused_write_token_is_not_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reset_sdk()
    recorder = Recorder(str(tmp_path / "s.db"))
    try:
        with serve_app(create_app(recorder, write_tokens=["right-token"])) as url:
            configure(url=url, write_token="wrong-token")
            _record(2)
            assert flush(10) is False
            assert stats() == {"queued": 0, "sending": 0, "delivered": 0,
                               "dropped": {"unauthorized": 2}}  # fmt: skip
            assert any(
                "refused the write token (HTTP 401)" in m and "AI_USAGE_EXPORTER_WRITE_TOKEN" in m
                for m in caplog.messages
            ), caplog.messages
            assert recorder.ledger.events() == []
            # Each flush answers for the events recorded since the one before.
            configure(url=url, write_token="right-token")
            _record(1)
            assert flush(10) is True
            assert stats() == {"queued": 0, "sending": 0, "delivered": 1, "dropped": {}}
    finally:
        reset_sdk()
        recorder.close()


def test_events_with_no_destination_are_not_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AI_USAGE_EXPORTER_URL", raising=False)
    reset_sdk()
    _record(3)
    assert flush(1) is False
    assert stats() == {"queued": 0, "sending": 0, "delivered": 0, "dropped": {"unconfigured": 3}}
    assert flush(1) is True  # nothing recorded since
    _record(1)
    assert flush(1) is False
    reset_sdk()


def test_an_event_a_timed_out_flush_left_behind_shows_in_stats() -> None:
    reset_sdk()
    # Nothing listens on port 9: the batch is retried with backoff, never acknowledged.
    configure(url="http://127.0.0.1:9")
    _record(1)
    t0 = time.monotonic()
    assert flush(0.3) is False
    assert time.monotonic() - t0 < 2
    s = stats()
    assert s == {"queued": 1, "sending": 1, "delivered": 0, "dropped": {}}
    assert _accounted(s) == 1
    reset_sdk()  # the exit flush gives up on it: now it is a counted drop


def test_a_timed_out_flush_does_not_hide_a_drop_from_the_next(tmp_path: Path) -> None:
    reset_sdk()
    recorder = Recorder(str(tmp_path / "s.db"))
    try:
        with serve_app(create_app(recorder)) as url:
            configure(url=url)
            # Invalid (cached above input): the sidecar answers 422 naming it.
            track_token_usage_sync(model="m", input_tokens=1, cached_input_tokens=5, provider="p")
            _record(1)
            flush(0)  # gives up at once; its marker must not swallow the drop
            assert flush(10) is False
            assert stats() == {"queued": 0, "sending": 0, "delivered": 1,
                               "dropped": {"rejected": 1}}  # fmt: skip
    finally:
        reset_sdk()
        recorder.close()


def test_in_process_recorder_refusals_are_not_acknowledged(tmp_path: Path) -> None:
    reset_sdk()
    recorder = Recorder(str(tmp_path / "s.db"))
    try:
        configure(recorder=recorder)
        track_token_usage_sync(model="m", input_tokens=1, cached_input_tokens=5, provider="p")
        _record(2)
        assert flush(10) is False
        assert stats() == {"queued": 0, "sending": 0, "delivered": 2, "dropped": {"invalid": 1}}
        _record(1)
        assert flush(10) is True
    finally:
        reset_sdk()
        recorder.close()


def test_in_process_events_wait_out_a_ledger_outage(tmp_path: Path) -> None:
    # The ledger refusing writes (as a read-only file does) is retried, never dropped.
    reset_sdk()
    recorder = Recorder(str(tmp_path / "s.db"))
    writer = recorder.ledger._w  # type: ignore[attr-defined]
    try:
        configure(recorder=recorder)
        with recorder._ledger_lock:
            writer.execute("PRAGMA query_only = ON")
        _record(2)
        assert flush(0.5) is False
        assert stats() == {"queued": 2, "sending": 2, "delivered": 0, "dropped": {}}
        with recorder._ledger_lock:
            writer.execute("PRAGMA query_only = OFF")
        assert flush(10) is True
        assert stats() == {"queued": 0, "sending": 0, "delivered": 2, "dropped": {}}
        assert len(recorder.ledger.events()) == 2
    finally:
        reset_sdk()
        recorder.close()
