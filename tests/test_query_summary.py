"""The query-summary line apps already log, accepted whole: every field has a home,
and a line whose totals disagree with its inferences is refused, naming both numbers."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from _server import server_process
from ai_usage_exporter.core.events.model import EventError
from ai_usage_exporter.core.events.parse import parse_event, parse_events
from ai_usage_exporter.recorder.recorder import Recorder

NOW = 1_790_000_000.0  # 2026-09-21; the line below is from 2026-01-20, within 400 days

# The line as apps write it to logs/token_usage.log, with its three inferences.
LINE: dict[str, Any] = {
    "event": "token_usage_summary",
    "query_id": "abc-123-def",
    "whatsapp": "+5491112345001",
    "mensaje": "Cuánto debo pagar? mi clave es sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv",
    "start_time": "2026-01-20T15:30:00",
    "end_time": "2026-01-20T15:30:05",
    "duration_seconds": 5.2,
    "provider": "google",
    "model": "gemini-2.0-flash-exp",
    "inference_count": 3,
    "inferences": [
        {"node_name": "manager", "inference_type": "planning", "prompt_tokens": 350,
         "completion_tokens": 100, "total_tokens": 450, "timestamp": "2026-01-20T15:30:01"},
        {"node_name": "researcher", "inference_type": "tool_call", "prompt_tokens": 400,
         "completion_tokens": 50, "total_tokens": 450, "timestamp": "2026-01-20T15:30:03"},
        {"node_name": "writer", "inference_type": "response", "prompt_tokens": 250,
         "completion_tokens": 100, "total_tokens": 350, "timestamp": "2026-01-20T15:30:04"},
    ],
    "totals": {"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1250},
}  # fmt: skip
START = 1_768_923_000.0  # 2026-01-20T15:30:00Z
REDACTED_TEXT = "Cuánto debo pagar? mi clave es [REDACTED]"


def _line(**changes: Any) -> dict[str, Any]:
    line = copy.deepcopy(LINE)
    line.update(changes)
    return line


def _details(obj: Any) -> list[tuple[str, str]]:
    with pytest.raises(EventError) as info:
        parse_events([obj], now=NOW)
    return [(d.field, d.message) for d in info.value.details]


def test_the_whole_line_becomes_three_events_carrying_the_query() -> None:
    events = parse_event(LINE, now=NOW)
    assert [(e.node, e.operation, e.input_tokens, e.output_tokens) for e in events] == [
        ("manager", "planning", 350, 100),
        ("researcher", "tool_call", 400, 50),
        ("writer", "response", 250, 100),
    ]
    for e in events:
        assert (e.query_start, e.query_end, e.query_duration_ms) == (START, START + 5, 5200.0)
        assert e.query_text == LINE["mensaje"]  # redacted on the way to the ledger, not here
        assert (e.user, e.query_id, e.provider) == ("+5491112345001", "abc-123-def", "google")
    assert [e.timestamp for e in events] == [START + 1, START + 3, START + 4]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"inference_count": 4},
            "inference_count",
            "inference_count is 4 but inferences has 3 entries",
        ),
        (
            {"totals": {"prompt_tokens": 950, "completion_tokens": 250, "total_tokens": 1250}},
            "totals.prompt_tokens",
            "totals.prompt_tokens is 950 but the inferences sum to 1000",
        ),
        (
            {"totals": {"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1200}},
            "totals.total_tokens",
            "totals.total_tokens is 1200 but the inferences sum to 1250",
        ),
        (
            {"total_completion_tokens": 260},
            "total_completion_tokens",
            "total_completion_tokens is 260 but the inferences sum to 250",
        ),
        (
            {"totals": {"prompt_token": 1000}},
            "totals.prompt_token",
            "unknown field 'prompt_token'; did you mean 'prompt_tokens'?",
        ),
        (
            {"end_time": "2026-01-20T15:29:00"},
            "end_time",
            "2026-01-20T15:29:00.000000Z is before the start 2026-01-20T15:30:00.000000Z",
        ),
        ({"duration_seconds": -1}, "duration_seconds", "must be >= 0, got -1"),
        ({"mensaje": 7}, "mensaje", "must be a string, got 7"),
        (
            {"inference_coutn": 3},
            "inference_coutn",
            "unknown field 'inference_coutn'; did you mean 'inference_count'?",
        ),
    ],
)
def test_a_line_that_disagrees_with_itself_is_refused(
    changes: dict[str, Any], field: str, message: str
) -> None:
    assert _details(_line(**changes)) == [(field, message)]


def test_consistent_totals_in_both_spellings_are_accepted() -> None:
    line = _line(total_prompt_tokens=1000, total_completion_tokens=250)
    assert len(parse_event(line, now=NOW)) == 3


def test_warning_is_read_as_warn() -> None:
    (e,) = parse_event({"provider": "p", "model": "m", "level": "warning"}, now=NOW)
    assert e.level == "warn"
    summary = _line(level="warning")
    assert {e.level for e in parse_event(summary, now=NOW)} == {"warn"}


def test_flat_events_may_carry_the_query_fields() -> None:
    (e,) = parse_event(
        {
            "provider": "p",
            "model": "m",
            "query_start": "2026-01-20T15:30:00Z",
            "query_end": START + 5,
            "query_duration_ms": 5200,
            "query_text": "hola",
        },
        now=NOW,
    )
    assert (e.query_start, e.query_end, e.query_duration_ms, e.query_text) == (
        START,
        START + 5,
        5200.0,
        "hola",
    )


def test_query_text_is_kept_only_with_store_text(tmp_path: Path) -> None:
    with Recorder(str(tmp_path / "off.db"), CollectorRegistry()) as rec:
        assert rec.record_many([_line()]).accepted == 3
        rows = rec.ledger.events()
    assert [r["query_text"] for r in rows] == [None, None, None]
    assert [r["query_duration_ms"] for r in rows] == [5200.0] * 3


def _ledger_rows(path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]
    finally:
        conn.close()


def test_the_line_posted_to_the_sidecar_lands_in_the_ledger(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    with server_process(db, env={"AI_USAGE_EXPORTER_STORE_TEXT": "true"}) as server:
        bad = _line(totals={"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1})
        r = httpx.post(f"{server.url}/api/usage", json=bad, timeout=10)
        assert r.status_code == 422
        assert r.json()["error"]["details"] == [
            {
                "index": 0,
                "field": "totals.total_tokens",
                "message": "totals.total_tokens is 1 but the inferences sum to 1250",
            }
        ]
        r = httpx.post(f"{server.url}/api/usage", json=LINE, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 3, "duplicates": 0}
    stored = _ledger_rows(db)
    assert [
        (r["node"], r["input_tokens"], r["output_tokens"], r["user"], r["query_id"]) for r in stored
    ] == [
        ("manager", 350, 100, "+5491112345001", "abc-123-def"),
        ("researcher", 400, 50, "+5491112345001", "abc-123-def"),
        ("writer", 250, 100, "+5491112345001", "abc-123-def"),
    ]
    for row in stored:
        assert (row["query_start"], row["query_end"], row["query_duration_ms"]) == (
            START,
            START + 5,
            5200.0,
        )
        assert row["query_text"] == REDACTED_TEXT


def test_queries_report_and_query_show_the_lines_own_timing_and_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import orjson

    from ai_usage_exporter.cli.main import main

    db = tmp_path / "ledger.db"
    with server_process(db, env={"AI_USAGE_EXPORTER_STORE_TEXT": "true"}) as server:
        r = httpx.post(f"{server.url}/api/usage", json=LINE, timeout=10)
        assert r.status_code == 200, r.text
        # Calls posted one by one with a query id and no query fields of their own.
        calls = [
            {"provider": "openai", "model": "gpt-4o-mini", "query_id": "q-flat", "input_tokens": n,
             "duration_ms": 700.0, "timestamp": START + 60 + i * 10}
            for i, n in enumerate((10, 20))
        ]  # fmt: skip
        assert httpx.post(f"{server.url}/api/usage", json=calls, timeout=10).status_code == 200
    argv = ["--db", str(db), "--since", "2026-01-20", "--until", "2026-01-21"]
    assert main(["report", "queries", "--format", "json", *argv]) == 0
    rows = {r["query_id"]: r for r in orjson.loads(capsys.readouterr().out)["rows"]}
    line, flat = rows["abc-123-def"], rows["q-flat"]
    assert (line["start"], line["end"], line["duration_ms"], line["text"]) == (
        "2026-01-20T15:30:00Z", "2026-01-20T15:30:05Z", 5200.0, REDACTED_TEXT
    )  # fmt: skip
    assert (line["inferences"], line["total_tokens"], line["tokens_per_s"]) == (3, 1250, 240.385)
    assert (flat["start"], flat["end"], flat["duration_ms"], flat["text"]) == (
        "2026-01-20T15:31:00Z", "2026-01-20T15:31:10Z", 1400.0, None
    )  # fmt: skip
    assert main(["report", "queries", "--format", "csv", *argv]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.endswith(",inference_ms,text")
    assert main(["query", "--query-id", "abc-123-def", "--db", str(db), "--format", "json"]) == 0
    got = orjson.loads(capsys.readouterr().out)
    assert {(c["query_start"], c["query_end"], c["query_duration_ms"], c["query_text"])
            for c in got} == {("2026-01-20T15:30:00Z", "2026-01-20T15:30:05Z", 5200.0,
                               REDACTED_TEXT)}  # fmt: skip
    assert main(["query", "--query-id", "abc-123-def", "--db", str(db)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-2:] == ["query_duration_ms", "query_text"]
    # The text is cut to 40 characters so a row stays one line.
    assert table[1].endswith("5,200.00           Cuánto debo pagar? mi clave es [REDACTE…")
