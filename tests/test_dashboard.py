"""The dashboard's routes over HTTP: the page and its files, /api/status, and who may read."""

from __future__ import annotations

import fnmatch
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from _server import serve_app
from ai_usage_exporter import Recorder
from ai_usage_exporter.server import create_app
from ai_usage_exporter.server.dashboard import status_view
from ai_usage_exporter.server.dashboard.routes import ASSETS

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "src" / "ai_usage_exporter" / "server" / "dashboard" / "static"
READ = "read-token-for-the-dashboard"
WRITE = "write-token-for-the-dashboard"
EVENT = {"provider": "openai", "model": "gpt-4o-mini", "service": "support-bot",
         "input_tokens": 1000, "output_tokens": 500, "duration_ms": 1840}  # fmt: skip


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    r = Recorder(str(tmp_path / "ledger.db"), CollectorRegistry())
    try:
        yield r
    finally:
        r.close()


def test_root_redirects_to_the_page_which_is_served_from_the_package(recorder: Recorder) -> None:
    with serve_app(create_app(recorder)) as url:
        r = httpx.get(f"{url}/")
        assert (r.status_code, r.headers["location"]) == (302, "/dashboard")
        page = httpx.get(f"{url}/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.text == (STATIC / "index.html").read_text()
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for name, media in ASSETS.items():
            a = httpx.get(f"{url}/dashboard/{name}")
            assert (a.status_code, a.headers["content-type"]) == (200, media)
            assert a.content == (STATIC / name).read_bytes()
        # Only the listed files: nothing else of the package is reachable.
        for path in ("routes.py", "..%2Froutes.py", "index.html", "static%2Fapp.js"):
            r = httpx.get(f"{url}/dashboard/{path}")
            assert r.status_code == 404, path
            assert r.json()["error"]["message"].startswith("no route")


def test_every_referenced_file_is_served_and_ships_in_the_wheel() -> None:
    page = (STATIC / "index.html").read_text()
    for name in ASSETS:
        if not name.endswith("LICENSE"):
            assert f'"/dashboard/{name}"' in page, name
    on_disk = {p.name for p in STATIC.iterdir()}
    assert on_disk == {*ASSETS, "index.html"}
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["ai_usage_exporter"]
    for name in on_disk:
        assert any(fnmatch.fnmatch(f"server/dashboard/static/{name}", p) for p in patterns), name


def test_status_reports_the_process_the_ledger_and_the_last_event(recorder: Recorder) -> None:
    with serve_app(create_app(recorder)) as url:
        before = httpx.get(f"{url}/api/status").json()
        assert before["status"] == "ok"
        assert before["ledger"] == {"kind": "sqlite", "writable": True, "error": None}
        assert (before["writer_error"], before["last_event_at"]) == (None, None)
        assert before["seconds_since_last_event"] is None
        assert before["events_pending"] == 0
        t0 = time.time()
        assert httpx.post(f"{url}/api/usage", json=EVENT).json()["accepted"] == 1
        after = httpx.get(f"{url}/api/status").json()
        assert t0 <= after["last_event_at"] <= time.time()
        assert 0 <= after["seconds_since_last_event"] <= time.time() - t0


def test_status_after_a_restart_takes_the_last_event_from_the_ledger(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    with Recorder(db, CollectorRegistry()) as r:
        r.record_many([{**EVENT, "timestamp": 1_790_000_000.5}])
    with Recorder(db, CollectorRegistry()) as r, serve_app(create_app(r)) as url:
        assert httpx.get(f"{url}/api/status").json()["last_event_at"] == 1_790_000_000.5


def test_status_view_is_degraded_when_the_writer_fails() -> None:
    view = status_view(
        now=1000.0,
        started_at=900.0,
        ledger_kind="sqlite",
        ledger_error=None,
        writer_error="ledger x: could not commit 1 events: disk full",
        last_event_at=990.0,
        pending=3,
    )
    assert view["status"] == "degraded"
    assert view["ledger"] == {"kind": "sqlite", "writable": False, "error": None}
    assert (view["uptime_seconds"], view["seconds_since_last_event"]) == (100.0, 10.0)
    assert view["events_pending"] == 3


def test_read_token_guards_the_pages_data_but_not_the_page(recorder: Recorder) -> None:
    app = create_app(recorder, write_tokens=[WRITE], read_tokens=[READ])
    with serve_app(app) as url:
        page = httpx.get(f"{url}/dashboard")
        assert page.status_code == 200
        # The page asks for the token before it fetches anything.
        assert 'data-auth="required"' in page.text
        assert httpx.get(f"{url}/dashboard/app.js").status_code == 200
        data_paths = (
            "/api/status",
            "/api/metrics",
            "/api/metrics/timeseries?metric=cost",
            "/api/reports/models?format=csv",
        )
        for path in data_paths:
            assert httpx.get(f"{url}{path}").status_code == 401, path
            wrong = httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {WRITE}"})
            assert wrong.status_code == 401, path
            ok = httpx.get(f"{url}{path}", headers={"authorization": f"Bearer {READ}"})
            assert ok.status_code == 200, path


def test_without_a_read_token_the_page_is_open(recorder: Recorder) -> None:
    with serve_app(create_app(recorder)) as url:
        assert 'data-auth="open"' in httpx.get(f"{url}/dashboard").text
        assert httpx.get(f"{url}/api/status").status_code == 200


def test_readiness_probes_while_writing_lose_nothing_acknowledged(tmp_path: Path) -> None:
    """Every open page polls the ledger probe; it must never share the writer's transaction.

    The probe writes and rolls back on the writer's connection: interleaved with a
    commit, its rollback used to undo events already acknowledged.
    """
    from ai_usage_exporter.ledger import LedgerError

    recorder = Recorder(str(tmp_path / "ledger.db"), CollectorRegistry())
    stop = False
    probe_errors: list[str] = []

    def probe() -> None:
        while not stop:
            try:
                recorder.check_ready()
            except LedgerError as exc:
                probe_errors.append(str(exc))

    import threading

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        accepted = sum(recorder.record_many([EVENT] * 20).accepted for _ in range(150))
    finally:
        stop = True
        thread.join()
    try:
        assert (accepted, recorder.ledger.count_events()) == (3000, 3000)
        assert probe_errors == []
    finally:
        recorder.close()
