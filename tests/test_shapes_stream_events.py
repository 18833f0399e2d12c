"""An event's `stream` (decoded stream events) counts exactly as the same call unstreamed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_streams import CASES, Case, _events

from _server import server_process
from ai_usage_exporter.core.events.model import EventError
from ai_usage_exporter.core.events.parse import parse_event
from ai_usage_exporter.core.shapes import USAGE_FIELDS

NOW = 1_790_000_000.0


def _streamed(case: Case, *, with_format: bool) -> dict[str, Any]:
    event: dict[str, Any] = {"stream": _events(case), "idempotency_key": f"s-{case.file}"}
    if with_format:
        event["stream_format"] = case.fmt
    if case.model is None:
        event["model"] = "m"
    return event


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file)
def test_a_stream_counts_as_its_non_streamed_usage(case: Case) -> None:
    (streamed,) = parse_event(_streamed(case, with_format=False), now=NOW)
    (plain,) = parse_event(
        {"provider": streamed.provider, "model": streamed.model, "usage": case.usage}, now=NOW
    )
    assert {f: getattr(streamed, f) for f in USAGE_FIELDS} == case.counts
    assert {f: getattr(plain, f) for f in USAGE_FIELDS} == case.counts
    assert streamed.model == (case.model or "m")
    assert streamed.provider  # told by the stream's own events
    (given,) = parse_event(_streamed(case, with_format=True), now=NOW)
    assert {f: getattr(given, f) for f in USAGE_FIELDS} == case.counts


def test_a_stream_without_usage_or_format_is_refused_by_name() -> None:
    with pytest.raises(EventError) as err:
        parse_event({"provider": "openai", "model": "m", "stream": [{"foo": 1}]}, now=NOW)
    assert err.value.details[0].field == "stream_format"
    with pytest.raises(EventError) as err:
        parse_event(
            {"provider": "openai", "model": "m", "stream": [], "stream_format": "openai_chat"},
            now=NOW,
        )
    assert err.value.details[0].field == "stream"
    with pytest.raises(EventError) as err:
        parse_event({"provider": "openai", "model": "m", "stream": {"a": 1}}, now=NOW)
    assert err.value.details[0].field == "stream"
    with pytest.raises(EventError) as err:
        parse_event(
            {"provider": "openai", "model": "m", "stream": [], "stream_format": "carrier-pigeon"},
            now=NOW,
        )
    assert err.value.details[0].field == "stream_format"


def test_streams_posted_over_http_equal_their_usage_posted_plainly(tmp_path: Path) -> None:
    picked = [c for c in CASES if c.model is not None][:6]
    body: list[dict[str, Any]] = []
    for case in picked:
        body.append(_streamed(case, with_format=False))
        (streamed,) = parse_event(_streamed(case, with_format=False), now=NOW)
        body.append(
            {"provider": streamed.provider, "model": case.model, "usage": case.usage,
             "idempotency_key": f"u-{case.file}"}
        )  # fmt: skip
    db = tmp_path / "ledger.db"
    with server_process(db) as server:
        r = httpx.post(f"{server.url}/api/usage", json=body, timeout=30)
        assert r.status_code == 200, r.text
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = {r["idempotency_key"]: dict(r) for r in conn.execute("SELECT * FROM events")}
    conn.close()
    for case in picked:
        s, u = rows[f"s-{case.file}"], rows[f"u-{case.file}"]
        assert {f: s[f] for f in USAGE_FIELDS} == case.counts
        assert {f: s[f] for f in USAGE_FIELDS} == {f: u[f] for f in USAGE_FIELDS}
        assert (s["provider"], s["model"], s["cost_total"]) == (
            u["provider"],
            u["model"],
            u["cost_total"],
        )
