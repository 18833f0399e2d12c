"""Reports, query, import, the usage log and prune, end to end through the CLI and HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from _server import exposition_samples, serve_app
from ai_usage_exporter import Recorder
from ai_usage_exporter.cli.main import main
from ai_usage_exporter.core.reports import REPORTS, Window, build_report
from ai_usage_exporter.importer.run import import_files
from ai_usage_exporter.ledger import open_ledger
from ai_usage_exporter.recorder.usagelog import UsageLog
from ai_usage_exporter.server import create_app

DAY = 86400
NOW = time.time()
D0 = int(NOW // DAY) * DAY - 3 * DAY  # three UTC days ago, midnight
SINCE, UNTIL = str(D0), str(D0 + 3 * DAY)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def _summary(qid: str, user: str, day: int, tokens: list[tuple[int, int]]) -> dict[str, Any]:
    return {
        "event": "token_usage_summary",
        "query_id": qid,
        "whatsapp": user,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "inferences": [
            {
                "node_name": f"n{i}",
                "prompt_tokens": p,
                "completion_tokens": c,
                "timestamp": _iso(D0 + day * DAY + 3600 + i),
            }
            for i, (p, c) in enumerate(tokens)
        ],
    }


SUMMARIES = [
    _summary("q1", "+15550001", 0, [(10, 2), (20, 5)]),
    _summary("q2", "+15550002", 1, [(100, 20)]),
    _summary("q3", "+15550001", 1, [(7, 1), (8, 1), (9, 1)]),
    _summary("q4", "+15550003", 2, [(1000, 300)]),
]
PER_DAY = {0: 37, 1: 120 + 27, 2: 1300}


def _write_log(path: Path) -> None:
    lines = []
    for i, s in enumerate(SUMMARIES):
        text = orjson.dumps(s).decode()
        prefix = ("", "2026-11-20 10:00:01,123 INFO app: TOKEN_USAGE ", "TOKEN_USAGE: ")[i % 3]
        lines.append(prefix + text)
    lines.insert(2, "2026-11-20 10:00:02 INFO app: unrelated line")
    path.write_text("\n".join(lines) + "\n")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_import_twice_equals_posting_once_and_report_and_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, db, posted = tmp_path / "app.log", str(tmp_path / "a.db"), str(tmp_path / "b.db")
    _write_log(log)
    code, out = _cli(capsys, "import", str(log), "--db", db)
    assert code == 0  # the unrelated log line is skipped, not an error
    assert out.splitlines()[0] == (
        "lines read 5, events accepted 7, duplicate 0, lines rejected 0, skipped 1"
    )
    code, out = _cli(capsys, "import", str(log), "--db", db, "--from-start")
    assert out.splitlines()[0] == (
        "lines read 5, events accepted 0, duplicate 7, lines rejected 0, skipped 1"
    )
    with Recorder(posted) as rec:
        for s in SUMMARIES:
            rec.record_many([s])
    a, b = open_ledger(db), open_ledger(posted)
    try:
        # The import wrote unassigned rows, the Recorder its instance's: compare all rows.
        assert a.summary(scope="fleet")["totals"] == b.summary(scope="fleet")["totals"]
        assert a.summary()["totals"]["tokens"]["total_tokens"] == sum(PER_DAY.values())
    finally:
        a.close()
        b.close()

    code, out = _cli(capsys, "report", "daily", "--db", db, "--format", "json",
                     "--since", SINCE, "--until", UNTIL)  # fmt: skip
    rows = orjson.loads(out)["rows"]
    assert {r["day"]: r["total_tokens"] for r in rows} == {
        time.strftime("%Y-%m-%d", time.gmtime(D0 + d * DAY)): n for d, n in PER_DAY.items()
    }
    code, out = _cli(capsys, "query", "--whatsapp", "+15550001", "--db", db, "--format", "json")
    calls = orjson.loads(out)
    assert [(c["query_id"], c["input_tokens"]) for c in calls] == [
        ("q3", 9), ("q3", 8), ("q3", 7), ("q1", 20), ("q1", 10)
    ]  # fmt: skip
    code, out = _cli(capsys, "report", "queries", "--db", db, "--format", "csv",
                     "--since", SINCE, "--until", UNTIL)  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("query_id,user,start,end,inferences,input_tokens,output_tokens")
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["q4", "+15550003"], ["q2", "+15550002"], ["q1", "+15550001"], ["q3", "+15550001"]
    ]  # fmt: skip


def test_prune_keeps_metrics_view_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "l.db")
    with Recorder(db) as rec:
        for s in SUMMARIES:
            rec.record_many([s])
        rec.record_many([{"provider": "openai", "model": "m", "input_tokens": 3}])
        before = (_usage_samples(rec), rec.view()["totals"])
    _, daily_before = _cli(capsys, "report", "daily", "--db", db, "--format", "json")
    code, out = _cli(capsys, "prune", "--older-than", "1d", "--db", db, "--dry-run")
    assert out.startswith("would delete 7 events older than")
    code, out = _cli(capsys, "prune", "--older-than", "1d", "--db", db)
    assert out.startswith("deleted 7 events older than")
    with Recorder(db) as rec:
        assert rec.ledger.count_events() == 1
        after = (_usage_samples(rec), rec.view()["totals"])
    assert after == before
    assert _cli(capsys, "report", "daily", "--db", db, "--format", "json")[1] == daily_before


def _usage_samples(rec: Recorder) -> dict[Any, float]:
    """The usage families; the exporter's own (events accepted since start...) restart at 0."""
    samples = exposition_samples(rec.exposition().decode())
    return {k: v for k, v in samples.items() if not k[0].startswith(("ai_exporter_", "process_"))}


def _both_ledgers(tmp_path: Path) -> list[str]:
    urls = [str(tmp_path / "r.db")]
    base = os.environ.get("AI_USAGE_EXPORTER_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("AI_USAGE_EXPORTER_TEST_POSTGRES_URL is not set")
        pytest.skip("AI_USAGE_EXPORTER_TEST_POSTGRES_URL is not set; no PostgreSQL to compare")
    return [*urls, base]


def test_every_report_is_the_same_on_sqlite_and_postgresql(tmp_path: Path) -> None:
    import uuid
    from urllib.parse import quote

    import psycopg

    sqlite_url, base = _both_ledgers(tmp_path)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    pg_url = f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={schema}')}"
    extra = [
        {"provider": "anthropic", "model": "claude", "agent": "planner", "task": "plan",
         "tool": "search", "workflow_id": "w1", "duration_ms": 1500.0, "input_tokens": 50,
         "output_tokens": 5, "timestamp": D0 + DAY + 60, "status": "error"},
        {"provider": "anthropic", "model": "claude", "agent": "planner", "task": "write",
         "workflow_id": "w1", "duration_ms": 500.0, "input_tokens": 40, "output_tokens": 30,
         "timestamp": D0 + DAY + 120, "tenant": "acme", "step": "2"},
    ]  # fmt: skip
    try:
        bodies = []
        for url in (sqlite_url, pg_url):
            with Recorder(url) as rec:
                rec.record_many([*SUMMARIES, *extra])
                w = Window(D0, D0 + 3 * DAY)
                bodies.append([build_report(rec.ledger, n, w, workflow="w1") for n in REPORTS])
        assert bodies[0] == bodies[1]
        agents = bodies[0][REPORTS.index("agents")]
        (planner,) = [a for a in agents["rows"] if a["agent"] == "planner"]
        assert (planner["agent"], planner["requests"], planner["errors"]) == ("planner", 2, 1)
        assert [t["task"] for t in planner["tasks"]] == ["write", "plan"] or [
            t["task"] for t in planner["tasks"]
        ] == ["plan", "write"]
        assert [s["n"] for s in agents["steps"]] == [1, 2]
        assert agents["steps"][1]["step"] == "2"
        assert agents["summary"]["requests"] == 9
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_report_route_json_csv_and_errors(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path / "l.db"))
    rec.record_many(SUMMARIES)
    with serve_app(create_app(rec, read_tokens=["r"], close_recorder=True)) as url:
        h = {"Authorization": "Bearer r"}
        assert httpx.get(f"{url}/api/reports/daily").status_code == 401
        params = {"since": SINCE, "until": UNTIL}
        body = httpx.get(f"{url}/api/reports/models", params=params, headers=h).json()
        assert body["report"] == "models"
        assert [(r["model"], r["requests"]) for r in body["rows"]] == [("gpt-4o-mini", 7)]
        r = httpx.get(f"{url}/api/reports/daily", params={**params, "format": "csv"}, headers=h)
        assert r.headers["content-type"].startswith("text/csv")
        assert r.text.splitlines()[0].startswith("day,requests,errors,input_tokens")
        assert len(r.text.splitlines()) == 4
        bad = httpx.get(f"{url}/api/reports/daily", params={"since": "soon"}, headers=h)
        assert bad.status_code == 400
        assert bad.json()["error"]["details"][0]["field"] == "since"
        assert httpx.get(f"{url}/api/reports/nope", headers=h).status_code == 404


def test_csv_and_flat_json_lines_import(tmp_path: Path) -> None:
    csv_path = tmp_path / "u.csv"
    csv_path.write_text(
        "provider,model,input_tokens,output_tokens,user,timestamp\n"
        f"openai,gpt-4o,10,2,alice,{D0 + 5}\n"
        "openai,gpt-4o,x,2,bob,\n"
        f"openai,gpt-4o,30,4,bob,{D0 + 6}\n"
    )
    flat = tmp_path / "u.ndjson"
    flat.write_text(
        orjson.dumps({"provider": "p", "model": "m", "input_tokens": 5}).decode() + "\n"
    )
    with Recorder(str(tmp_path / "l.db")) as rec:
        stats = import_files(rec, [str(csv_path), str(flat)])
        assert (stats.read, stats.accepted, stats.rejected, stats.skipped) == (5, 3, 1, 1)
        assert stats.rejects[0][1:] == (3, "input_tokens: cannot read 'x'")
        rows = rec.ledger.events()
        assert sorted((r["user"] or "", r["input_tokens"]) for r in rows) == [
            ("", 5), ("alice", 10), ("bob", 30)
        ]  # fmt: skip


def test_usage_log_reads_back_to_the_same_totals(tmp_path: Path) -> None:
    log = tmp_path / "usage.log"
    with Recorder(str(tmp_path / "a.db"), usage_log=UsageLog(str(log), max_bytes=2048)) as rec:
        for s in SUMMARIES:
            rec.record_many([s])
        rec.record_many([{"provider": "openai", "model": "m", "input_tokens": i,
                          "idempotency_key": f"k{i}" if i % 2 else None} for i in range(1, 30)])  # fmt: skip
        rec.record_many(
            [{"provider": "openai", "model": "m", "input_tokens": 1, "idempotency_key": "k1"}]
        )
        want = rec.view()["totals"]
    files = sorted(tmp_path.glob("usage.log*"), reverse=True)
    assert len(files) > 1  # rotated
    assert "# ===== query q1 user +15550001 =====" in "".join(f.read_text() for f in files)
    with Recorder(str(tmp_path / "b.db")) as rec:
        stats = import_files(rec, [str(f) for f in files])
        assert stats.rejected == 0
        assert rec.view()["totals"] == want


def test_follow_survives_rotation(tmp_path: Path) -> None:
    log, db = tmp_path / "app.log", str(tmp_path / "f.db")
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ai_usage_exporter", "import", "--follow", str(log), "--db", db],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip

    def line(i: int) -> str:
        return orjson.dumps({"provider": "p", "model": "m", "input_tokens": i}).decode() + "\n"

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode() if proc.stdout else "")
            ledger = open_ledger(db)
            try:
                if ledger.count_events() >= n:
                    return
            finally:
                ledger.close()
            time.sleep(0.2)
        raise AssertionError(f"fewer than {n} events after 30 s")

    try:
        with log.open("a") as f:
            f.write(line(1) + line(2))
        wait_for(2)
        with log.open("a") as f:
            f.write(line(3))  # written just before the rotation: must not be lost
        log.rename(tmp_path / "app.log.1")
        log.write_text(line(4) + line(5))
        wait_for(5)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    ledger = open_ledger(db)
    try:
        assert sorted(r["input_tokens"] for r in ledger.events()) == [1, 2, 3, 4, 5]
    finally:
        ledger.close()


def test_docs_sql_runs_on_both_databases(tmp_path: Path) -> None:
    import re
    import uuid
    from urllib.parse import quote

    import psycopg

    blocks = re.findall(
        r"```sql\n(.*?)```", (Path(__file__).parent.parent / "docs" / "sql.md").read_text(), re.S
    )
    assert len(blocks) == 5
    sqlite_url, base = _both_ledgers(tmp_path)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    pg_url = f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={schema}')}"
    try:
        results = []
        for url in (sqlite_url, pg_url):
            with Recorder(url) as rec:
                rec.record_many(SUMMARIES)
            if url == sqlite_url:
                import sqlite3

                with sqlite3.connect(url) as lite:
                    results.append([lite.execute(b).fetchall() for b in blocks])
            else:
                with psycopg.connect(url) as conn:
                    results.append([conn.execute(b).fetchall() for b in blocks])
        lite_rows, pg_rows = results
        assert _norm(lite_rows) == _norm(pg_rows)
        assert len(lite_rows[4]) == 5  # +15550001's five calls
        assert lite_rows[3][0][0] == "q4"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _norm(blocks: list[list[Any]]) -> list[list[tuple[Any, ...]]]:
    """Numbers as floats rounded to 1e-9: PostgreSQL sums to Decimal, SQLite to float."""
    from decimal import Decimal

    def one(v: Any) -> Any:
        return round(float(v), 9) if isinstance(v, int | float | Decimal) else v

    return [[tuple(one(v) for v in row) for row in rows] for rows in blocks]


# Events at known times of two UTC days: (offset from D0 + DAY, input tokens, model).
PARTIAL = [(10 * 3600, 1, "a"), (23 * 3600 + 1800, 2, "b"), (DAY + 600, 4, "a"),
           (DAY + 5 * 3600 + 1200, 8, "b"), (DAY + 7 * 3600, 16, "a")]  # fmt: skip


def _partial_events() -> list[dict[str, Any]]:
    return [
        {"provider": "openai", "model": m, "input_tokens": n, "timestamp": D0 + DAY + t}
        for t, n, m in PARTIAL
    ]


def test_plan_tiles_days_hours_minutes_and_widens_where_pruned() -> None:
    from ai_usage_exporter.core.reports import plan

    h, m = 3600, 60
    w = Window(D0 + 9 * h + 30 * m, D0 + 2 * DAY + 6 * h + 10 * m)
    assert plan(w, {}) == (w, [
        (60, D0 + 9 * h + 30 * m, D0 + 10 * h),
        (3600, D0 + 10 * h, D0 + DAY),
        (86400, D0 + DAY, D0 + 2 * DAY),
        (3600, D0 + 2 * DAY, D0 + 2 * DAY + 6 * h),
        (60, D0 + 2 * DAY + 6 * h, D0 + 2 * DAY + 6 * h + 10 * m),
    ])  # fmt: skip
    # Minutes deleted before 07:13 of the last day: the first end widens to its hour.
    covered, tiles = plan(w, {60: D0 + 2 * DAY + 7 * h + 13 * m})
    assert covered == Window(D0 + 9 * h, D0 + 2 * DAY + 7 * h)
    assert tiles == [(3600, D0 + 9 * h, D0 + DAY), (86400, D0 + DAY, D0 + 2 * DAY),
                     (3600, D0 + 2 * DAY, D0 + 2 * DAY + 7 * h)]  # fmt: skip
    # Hours deleted too: whole days.
    covered, tiles = plan(w, {60: D0 + 3 * DAY, 3600: D0 + 3 * DAY})
    assert (covered, tiles) == (Window(D0, D0 + 3 * DAY), [(86400, D0, D0 + 3 * DAY)])
    # Within one hour, minutes only.
    inner = Window(D0 + 5 * m, D0 + 20 * m)
    assert plan(inner, {}) == (inner, [(60, D0 + 5 * m, D0 + 20 * m)])


def test_daily_report_on_partial_days_gives_one_row_per_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "p.db")
    with Recorder(db) as rec:
        rec.record_many(_partial_events())
    since = time.strftime("%Y-%m-%dT09:30:00Z", time.gmtime(D0 + DAY))
    until = time.strftime("%Y-%m-%dT06:10:00Z", time.gmtime(D0 + 2 * DAY))
    day1, day2 = (time.strftime("%Y-%m-%d", time.gmtime(D0 + d * DAY)) for d in (1, 2))
    code, out = _cli(capsys, "report", "daily", "--db", db, "--format", "json",
                     "--since", since, "--until", until)  # fmt: skip
    body = orjson.loads(out)
    assert [(r["day"], r["requests"], r["input_tokens"]) for r in body["rows"]] == [
        (day1, 2, 3), (day2, 2, 12)
    ]  # fmt: skip
    assert (body["since"], body["until"], "asked" in body) == (since, until, False)
    # Every key report sums the same partial days, one row per key.
    code, out = _cli(capsys, "report", "models", "--db", db, "--format", "json",
                     "--since", since, "--until", until)  # fmt: skip
    rows = orjson.loads(out)["rows"]
    # Unpriced and as many requests each: ordered by key.
    assert [(r["model"], r["requests"], r["input_tokens"]) for r in rows] == [
        ("a", 2, 5), ("b", 2, 10)
    ]  # fmt: skip
    with serve_app(create_app(Recorder(db), close_recorder=True)) as url:
        r = httpx.get(f"{url}/api/reports/daily", params={"since": since, "until": until})
        assert [(x["day"], x["total_tokens"]) for x in r.json()["rows"]] == [(day1, 3), (day2, 12)]


def test_reports_read_hour_buckets_where_minutes_were_pruned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ai_usage_exporter.cli.commands import prune
    from ai_usage_exporter.config.settings import Settings

    db = str(tmp_path / "r.db")
    with Recorder(db) as rec:
        rec.record_many(_partial_events())
        # Minute buckets kept for less than a day: every minute of these events goes.
        prune(rec.ledger, Settings(db=db, minute_retention=3600.0), NOW)
    since = time.strftime("%Y-%m-%dT09:30:00Z", time.gmtime(D0 + DAY))
    until = time.strftime("%Y-%m-%dT06:10:00Z", time.gmtime(D0 + 2 * DAY))
    code, out = _cli(capsys, "report", "daily", "--db", db, "--format", "json",
                     "--since", since, "--until", until)  # fmt: skip
    body = orjson.loads(out)
    assert [(r["requests"], r["input_tokens"]) for r in body["rows"]] == [(2, 3), (2, 12)]
    assert body["asked"] == {"since": since, "until": until}
    assert (body["since"], body["until"]) == (
        since.replace("09:30", "09:00"),
        until.replace("06:10", "07:00"),
    )
    code, out = _cli(capsys, "report", "daily", "--db", db, "--since", since, "--until", until)
    assert "retention kept only coarser buckets" in out.splitlines()[1]
    code, out = _cli(capsys, "report", "tenants", "--db", db, "--format", "json",
                     "--since", since, "--until", until)  # fmt: skip
    assert [r["input_tokens"] for r in orjson.loads(out)["rows"]] == [15]


def test_the_retention_thread_prunes_while_totals_stay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ai_usage_exporter.cli.commands import start_retention
    from ai_usage_exporter.config.settings import Settings

    db = str(tmp_path / "t.db")
    recent = {"provider": "openai", "model": "m", "input_tokens": 3, "timestamp": NOW - 60}
    settings = Settings(db=db, retention=DAY, minute_retention=2 * DAY, hour_retention=None)
    with Recorder(db) as rec:
        rec.record_many([*SUMMARIES, recent])
        before = (_usage_samples(rec), rec.view()["totals"])
        _, daily_before = _cli(capsys, "report", "daily", "--db", db, "--format", "json")
        old_minutes = rec.ledger.bucket_sums(60, D0, D0 + 3 * DAY)
        assert old_minutes and old_minutes[0][0] == 7  # requests
        stop = start_retention(settings, interval=0.05)
        try:
            deadline = time.monotonic() + 30
            while rec.ledger.count_events() > 1:
                assert time.monotonic() < deadline, "the retention thread deleted nothing in 30 s"
                time.sleep(0.05)
        finally:
            stop.set()
        assert [e["input_tokens"] for e in rec.ledger.events()] == [3]
        # Minute buckets older than their two days went too; the hour and day ones stay.
        assert rec.ledger.bucket_sums(60, D0, int(NOW - 2 * DAY)) == []
        assert rec.ledger.bucket_sums(3600, D0, D0 + 3 * DAY)[0][0] == 7
        assert (_usage_samples(rec), rec.view()["totals"]) == before
    assert _cli(capsys, "report", "daily", "--db", db, "--format", "json")[1] == daily_before


def test_agents_text_says_when_the_workflow_asked_for_has_no_events(tmp_path: Path) -> None:
    from ai_usage_exporter.core.reports import render

    with Recorder(str(tmp_path / "l.db")) as rec:
        rec.record_many(SUMMARIES)
        w = Window(D0, D0 + 3 * DAY)
        missing = render(build_report(rec.ledger, "agents", w, workflow="wf-typo"), "text")
        plain = render(build_report(rec.ledger, "agents", w), "text")
    assert "----- execution log, workflow wf-typo: no events in this range -----" in missing
    assert "execution log" not in plain


def test_query_table_formats_numbers_like_the_reports(tmp_path: Path) -> None:
    """The table view shows money and counts readably, not as raw floats."""
    db = tmp_path / "q.db"
    with Recorder(str(db)) as rec:
        rec.record_many(
            [
                {"provider": "openai", "model": "gpt-4o-mini", "user": "u1",
                 "input_tokens": 1234, "output_tokens": 50, "cost_usd": 7.500000000000001e-05},
            ]
        )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "ai_usage_exporter", "query", "--db", str(db), "--user", "u1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    header, row = out.stdout.splitlines()
    cells = row.split()
    assert "1,234" in cells and "0.000075" in cells
    assert "7.500000000000001e-05" not in out.stdout
