"""Shared pieces of the SDK tests: a clean SDK state per test, and a fake provider."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _fake_provider import fake_provider_app
from _server import serve_app
from ai_usage_exporter import Recorder
from ai_usage_exporter.sdk import core, hub


def reset_sdk() -> None:
    core.shutdown(1.0)
    hub._hub.__init__()  # type: ignore[misc]
    hub._hub.enabled = True


@contextmanager
def fake_provider() -> Iterator[str]:
    with serve_app(fake_provider_app()) as url:
        yield url


@contextmanager
def in_process(tmp_path: Path) -> Iterator[Recorder]:
    """The SDK configured to record into a Recorder over a fresh SQLite ledger."""
    reset_sdk()
    recorder = Recorder(str(tmp_path / "sdk.db"))
    core.configure(recorder=recorder)
    try:
        yield recorder
    finally:
        reset_sdk()
        recorder.close()
