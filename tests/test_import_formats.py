"""`import` over log lines as apps, loggers and platforms really write them."""

from __future__ import annotations

import copy
import gzip
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from ai_usage_exporter import Recorder
from ai_usage_exporter.cli.main import main
from ai_usage_exporter.importer.formats import LineError, LineReader
from ai_usage_exporter.importer.run import import_files

DAY = 86400
D = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 3 * DAY))  # a recent UTC day


def summary(qid: str, scale: int = 1) -> dict[str, Any]:
    """The query-summary line of issue 9, whole, with three inferences."""
    p, c = (350 * scale, 400 * scale, 250 * scale), (100 * scale, 50 * scale, 100 * scale)
    return {
        "event": "token_usage_summary", "query_id": qid, "whatsapp": "+5491112345001",
        "mensaje": "Cuánto debo pagar?", "start_time": f"{D}T15:30:00",
        "end_time": f"{D}T15:30:05", "duration_seconds": 5.2, "provider": "google",
        "model": "gemini-2.0-flash-exp", "inference_count": 3,
        "inferences": [
            {"node_name": n, "inference_type": t, "prompt_tokens": p[i],
             "completion_tokens": c[i], "total_tokens": p[i] + c[i],
             "timestamp": f"{D}T15:30:0{i + 1}"}
            for i, (n, t) in enumerate(
                (("manager", "planning"), ("researcher", "tool_call"), ("writer", "response"))
            )
        ],
        "totals": {"prompt_tokens": sum(p), "completion_tokens": sum(c),
                   "total_tokens": sum(p) + sum(c)},
    }  # fmt: skip


def js(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def wrapped_lines() -> dict[str, str]:
    """One summary per way of writing it; the query id names the way."""
    s = {name: js(summary(name)) for name in WAYS}
    half = len(s["cri-split"]) // 2
    dsplit = f"TOKEN_USAGE {s['docker-split']}\n"
    return {
        "bare": s["bare"],
        "marker": f"TOKEN_USAGE {s['marker']}",
        "python-logging": f"{D} 15:30:05,123 - app.tokens - INFO - TOKEN_USAGE {s['python-logging']}",
        "root": f"INFO:root:{s['root']}",
        "bracketed": f"[{D}T15:30:05Z] INFO {s['bracketed']}",
        "uvicorn": f"INFO:     TOKEN_USAGE {s['uvicorn']}",
        "gunicorn": f"[{D} 15:30:05 +0000] [7] [INFO] TOKEN_USAGE {s['gunicorn']}",
        "docker-t": f"{D}T15:30:05.123456789Z TOKEN_USAGE {s['docker-t']}",
        "journald": f"Jan 20 15:30:05 host app[123]: TOKEN_USAGE {s['journald']}",
        "cri": f"{D}T15:30:05.123Z stdout F {s['cri']}",
        "cri-split": f"{D}T15:30:05.1Z stdout P {s['cri-split'][:half]}\n"
        f"{D}T15:30:05.2Z stdout F {s['cri-split'][half:]}",
        "json-logger": js(
            {
                "timestamp": f"{D}T15:30:05Z",
                "level": "INFO",
                "message": f"TOKEN_USAGE {s['json-logger']}",
            }
        ),  # fmt: skip
        "python-json-logger": js(
            {
                "asctime": f"{D} 15:30:05,123",
                "levelname": "INFO",
                "name": "app",
                "message": s["python-json-logger"],
            }
        ),  # fmt: skip
        "structlog": js(
            {
                "event": "token usage",
                "usage": summary("structlog"),
                "level": "info",
                "timestamp": f"{D}T15:30:05Z",
            }
        ),  # fmt: skip
        "journald-json": js({"MESSAGE": f"TOKEN_USAGE {s['journald-json']}", "PRIORITY": "6"}),
        "docker-json": js(
            {
                "log": f"TOKEN_USAGE {s['docker-json']}\n",
                "stream": "stdout",
                "time": f"{D}T15:30:05.1Z",
            }
        ),  # fmt: skip
        "docker-split": js({"log": dsplit[:500], "stream": "stdout", "time": f"{D}T15:30:05Z"})
        + "\n"
        + js({"log": dsplit[500:], "stream": "stdout", "time": f"{D}T15:30:05Z"}),
        "repr": f"INFO:app:TOKEN_USAGE {summary('repr')!r}",
    }


WAYS = (
    "bare", "marker", "python-logging", "root", "bracketed", "uvicorn", "gunicorn", "docker-t",
    "journald", "cri", "cri-split", "json-logger", "python-json-logger", "structlog",
    "journald-json", "docker-json", "docker-split", "repr",
)  # fmt: skip
NOISE = [
    'INFO:     127.0.0.1:50234 - "POST /chat HTTP/1.1" 200 OK',
    js({"level": "info", "message": "server started", "port": 8000}),
    js({"log": "GET /health 200\n", "stream": "stderr", "time": f"{D}T15:30:05Z"}),
    "INFO:root:config {'debug': True}",
    f"{D}T15:30:05.123Z stderr F Traceback (most recent call last):",
    js({"event": "calling model", "provider": "openai", "model": "gpt-4o-mini"}),
    "",
    "# a comment",
    "[1, 2, 3]",
]
STRUCTLOG_OWN = js({"event": "llm call", "provider": "openai", "model": "gpt-4o-mini",
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                    "level": "info", "logger": "app", "timestamp": f"{D}T15:31:00Z"})  # fmt: skip


def _tokens_per_query(rec: Recorder) -> dict[str, tuple[int, int, int]]:
    out: dict[str, tuple[int, int, int]] = {}
    for r in rec.ledger.events():
        n, i, o = out.get(r["query_id"] or "", (0, 0, 0))
        out[r["query_id"] or ""] = (n + 1, i + r["input_tokens"], o + r["output_tokens"])
    return out


def test_every_wrapping_of_the_summary_line_imports_and_noise_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ways = wrapped_lines()
    bad = summary("bad-totals")
    bad["totals"]["prompt_tokens"] = 999
    body = [*NOISE[:3], *ways.values(), *NOISE[3:], STRUCTLOG_OWN, js(bad),
            'TOKEN_USAGE {"event": "token_usage_summary", "query_id": "cut']  # fmt: skip
    text = "\r\n".join(body) + "\r\n"
    log = tmp_path / "app.log"
    log.write_bytes(b"\xef\xbb\xbf" + text.encode())
    lines = text.count("\n")
    db = str(tmp_path / "l.db")
    assert main(["import", str(log), "--db", db]) == 1
    out = capsys.readouterr().out.splitlines()
    bad_at = body.index(js(bad)) + 1 + sum(w.count("\n") for w in ways.values())
    assert out[:3] == [
        f"lines read {lines}, events accepted {3 * len(WAYS) + 1}, duplicate 0, "
        f"lines rejected 2, skipped {len(NOISE) + 2}",  # + the first halves of the splits
        f"  {log}:{bad_at}: totals.prompt_tokens: totals.prompt_tokens is 999 but the "
        "inferences sum to 1000",
        f"  {log}:{bad_at + 1}: malformed JSON: Unterminated string starting at: line 1 column 46 (char 45)",
    ]
    with Recorder(db) as rec:
        got = _tokens_per_query(rec)
    assert got == {**{w: (3, 1000, 250) for w in WAYS}, "": (1, 11, 3)}
    # Again: the same records, however wrapped, count once.
    assert main(["import", str(log), "--db", db, "--from-start"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        f"lines read {lines}, events accepted 0, duplicate {3 * len(WAYS) + 1}, "
        f"lines rejected 2, skipped {len(NOISE) + 2}"
    )


def test_a_last_line_being_written_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "token_usage.log"
    whole = f"TOKEN_USAGE {js(summary('q-last'))}\n"
    log.write_text(js(summary("q-first")) + "\n" + whole[:80])
    with Recorder(str(tmp_path / "l.db")) as rec:
        stats = import_files(rec, [str(log)])
        assert (stats.read, stats.accepted, stats.rejected, stats.incomplete) == (1, 3, 0, 1)
        assert "1 record(s) still being written" in stats.summary()
        with log.open("a") as f:
            f.write(whole[80:])
        stats = import_files(rec, [str(log)])  # resumes at the checkpoint: only the new line
        assert (stats.read, stats.accepted, stats.duplicate, stats.incomplete) == (1, 3, 0, 0)
        # A last line without a newline that reads whole is taken.
        with log.open("a") as f:
            f.write(js(summary("q-no-newline")))
        stats = import_files(rec, [str(log)])
        assert (stats.read, stats.accepted, stats.incomplete) == (1, 3, 0)
        assert import_files(rec, [str(log)]).read == 0
        assert set(_tokens_per_query(rec)) == {"q-first", "q-last", "q-no-newline"}


def test_rotated_gzip_files_and_the_live_file(tmp_path: Path) -> None:
    old = [js(summary(f"old-{i}")) for i in range(3)]
    with gzip.open(tmp_path / "app.log.2.gz", "wt") as f:
        f.write("\n".join(f"INFO:root:TOKEN_USAGE {x}" for x in old) + "\n")
    (tmp_path / "app.log.1").write_text("\n".join(old) + "\n")  # the same, uncompressed
    (tmp_path / "app.log").write_text(js(summary("new")) + "\n")
    files = [str(tmp_path / n) for n in ("app.log.2.gz", "app.log.1", "app.log")]
    with Recorder(str(tmp_path / "l.db")) as rec:
        stats = import_files(rec, files)
        assert (stats.read, stats.accepted, stats.duplicate, stats.rejected) == (7, 12, 9, 0)
        assert import_files(rec, files).read == 0  # every file resumes at its end
        stats = import_files(rec, files, from_start=True)
        assert (stats.accepted, stats.duplicate) == (0, 21)


def test_a_gzip_file_cut_short_keeps_what_came_before(tmp_path: Path) -> None:
    n = 1500
    text = "".join(js(summary(f"z{i}", i + 1)) + "\n" for i in range(n))
    data = gzip.compress(text.encode())
    cut = tmp_path / "app.log.3.gz"
    cut.write_bytes(data[: len(data) * 3 // 4])
    with Recorder(str(tmp_path / "l.db")) as rec:
        stats = import_files(rec, [str(cut)])
        assert stats.rejected == 1 and 0 < stats.accepted == 3 * stats.read < 3 * n
        assert stats.rejects[0][1] == stats.read + 1
        assert "cannot read on: EOFError" in stats.rejects[0][2]


def test_csv_with_either_spelling_bom_and_crlf(tmp_path: Path) -> None:
    ts = time.time() - DAY
    ours = tmp_path / "ours.csv"
    ours.write_bytes(
        b"\xef\xbb\xbfprovider,model,input_tokens,output_tokens,user,timestamp\r\n"
        + f"openai,gpt-4o,10,2,alice,{ts}\r\n\r\nopenai,gpt-4o,12.0,1,bob,{ts + 1}\r\n".encode()
    )
    openai = tmp_path / "openai.csv"
    openai.write_text(
        "provider, model, prompt_tokens, completion_tokens, total_tokens, query_id\n"
        "openai,gpt-4o-mini,100,20,120,q1\n"
        "openai,gpt-4o-mini,100,20,,q2\n"
        "openai,gpt-4o-mini,1.5,20,,q3\n"
    )
    odd = tmp_path / "odd.csv"
    odd.write_text("provider,model,prompt_token,cost\nopenai,gpt-4o,1,0.1\n")
    with Recorder(str(tmp_path / "l.db")) as rec:
        stats = import_files(rec, [str(ours), str(openai), str(odd)])
        assert (stats.read, stats.accepted, stats.rejected, stats.skipped) == (10, 4, 2, 4)
        assert [r[1:] for r in stats.rejects] == [
            (4, "prompt_tokens: cannot read '1.5'"),
            (
                1,
                "CSV header: unknown fields 'prompt_token' (did you mean 'prompt_tokens'?), 'cost'",
            ),
        ]
        rows = sorted((r["user"] or r["query_id"], r["input_tokens"]) for r in rec.ledger.events())
        assert rows == [("alice", 10), ("bob", 12), ("q1", 100), ("q2", 100)]


def test_line_reader_decisions() -> None:
    r = LineReader()
    assert r.read(b"   \r\n") is None
    assert r.read(b"2026-01-20 15:30:05 INFO app: nothing to see\n") is None
    assert r.read(b'{"provider": "p", "model": "m", "status": "error"}') == {
        "provider": "p", "model": "m", "status": "error"
    }  # fmt: skip
    # A misspelt field is still an event (validation names it), not a log line.
    assert r.read(b'{"provider": "p", "model": "m", "prompt_token": 3}') is not None
    # A dict printed in the prefix does not hide the record after the marker.
    line = b"[{app}] TOKEN_USAGE " + orjson.dumps({"provider": "p", "model": "m"})
    assert r.read(line) == {"provider": "p", "model": "m"}
    # A usage line cut short is an error; other broken braces are just log text.
    with pytest.raises(LineError, match="malformed JSON"):
        r.read(b'INFO TOKEN_USAGE {"event": "token_usage_summary", "inferences": [{')
    assert r.read(b"INFO got {not json} here") is None
    # structlog with naive local-less timestamps: read as UTC.
    got = r.read(orjson.dumps({"event": "x", "provider": "p", "model": "m", "input_tokens": 1,
                               "timestamp": "2026-01-20 15:30:05"}))  # fmt: skip
    assert got == {"provider": "p", "model": "m", "input_tokens": 1, "timestamp": 1768923005.0}
    # A logger's suffix after the object does not hide it.
    assert r.read(b'INFO {"provider": "p", "model": "m", "input_tokens": 2} (app.py:12)') == {
        "provider": "p", "model": "m", "input_tokens": 2
    }  # fmt: skip
    assert copy.deepcopy(r.state()) == {"header": None, "pending": "", "block": ""}


def test_a_log_from_two_years_ago_imports(tmp_path: Path) -> None:
    # The HTTP path refuses events over 400 days old; a log file is history.
    old = time.time() - 730 * DAY
    log = tmp_path / "old.log"
    log.write_text(js({"provider": "openai", "model": "gpt-4o", "input_tokens": 5,
                       "timestamp": old}) + "\n")  # fmt: skip
    with Recorder(str(tmp_path / "l.db")) as rec:
        stats = import_files(rec, [str(log)])
        assert (stats.accepted, stats.rejected) == (1, 0)
        assert [r["ts"] for r in rec.ledger.events()] == [old]


def test_a_pretty_printed_summary_spans_lines(tmp_path: Path) -> None:
    # `logger.info("TOKEN_USAGE %s", json.dumps(summary, indent=2))`
    import json

    pretty = json.dumps(summary("pretty"), indent=2, ensure_ascii=False)
    second = json.dumps(summary("pretty-2"), indent=2)
    log = tmp_path / "app.log"
    log.write_text(
        f"{D} 15:30:05,123 - app - INFO - TOKEN_USAGE {pretty}\n"
        "INFO:root:next request\n" + js(summary("flat")) + "\n"
        f"{D} 15:30:06,000 - app - INFO - TOKEN_USAGE {second[:300]}"
    )
    with Recorder(str(tmp_path / "l.db")) as rec:
        stats = import_files(rec, [str(log)])
        assert (stats.accepted, stats.rejected, stats.incomplete) == (6, 0, 1)
        assert set(_tokens_per_query(rec)) == {"pretty", "flat"}
        with log.open("a") as f:  # the rest of the second one arrives
            f.write(second[300:] + "\n")
        stats = import_files(rec, [str(log)])  # resumes inside the object
        assert (stats.accepted, stats.rejected, stats.incomplete) == (3, 0, 0)
        assert _tokens_per_query(rec)["pretty-2"] == (3, 1000, 250)
