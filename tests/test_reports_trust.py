"""Issue 23, the reports side: answers that were silently wrong, each pinned by a test.

Every report here runs on SQLite and PostgreSQL (the `ledger_url` fixture).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from test_ledger import ledger_url  # noqa: F401 - the sqlite/postgresql fixture

from _server import exposition_samples, serve_app
from ai_usage_exporter import Recorder
from ai_usage_exporter.cli.main import main
from ai_usage_exporter.core.reports import Window, build_report, render
from ai_usage_exporter.ledger import open_ledger
from ai_usage_exporter.server import create_app

DAY = 86400
D0 = int(time.time() // DAY) * DAY - 2 * DAY
W = Window(D0, D0 + 3 * DAY)


def _ev(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"provider": "openai", "model": "gpt-4o-mini", "timestamp": D0 + 3600}
    return {**base, **kw}


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


# ---------------------------------------------------------------- 1. ORDER BY the sums


def test_queries_by_tokens_orders_by_the_sums(ledger_url: str) -> None:  # noqa: F811
    # qa: ten calls of 100 tokens (1,000 in all); qb: one call of 500 tokens.
    events = [_ev(query_id="qa", input_tokens=100, output_tokens=0) for _ in range(10)]
    events.append(_ev(query_id="qb", input_tokens=500, output_tokens=0, cost_usd=1.0))
    with Recorder(ledger_url) as rec:
        rec.record_many(events)
        by_tokens = build_report(rec.ledger, "queries", W, order="tokens")
        by_cost = build_report(rec.ledger, "queries", W, order="cost")
    assert [(r["query_id"], r["total_tokens"]) for r in by_tokens["rows"]] == [
        ("qa", 1000),
        ("qb", 500),
    ]
    assert [r["query_id"] for r in by_cost["rows"]] == ["qb", "qa"]


def test_key_reports_order_by_summed_cost_across_days(ledger_url: str) -> None:  # noqa: F811
    # m1 is the dearest on no single day, but the dearest over the three.
    events = [
        _ev(model="m1", cost_usd=0.4, timestamp=D0 + d * DAY + 60, input_tokens=1) for d in range(3)
    ]
    events.append(_ev(model="m2", cost_usd=1.0, timestamp=D0 + 60, input_tokens=1))
    with Recorder(ledger_url) as rec:
        rec.record_many(events)
        body = build_report(rec.ledger, "models", W)
    assert [(r["model"], round(r["cost_usd"], 9)) for r in body["rows"]] == [
        ("m1", 1.2),
        ("m2", 1.0),
    ]


# ---------------------------------------------------------------- 2. rates over covered events


def test_rates_use_only_the_events_with_a_duration(ledger_url: str) -> None:  # noqa: F811
    events = [
        _ev(agent="a", input_tokens=80, output_tokens=20, cost_usd=0.5, duration_ms=2000.0),
        _ev(agent="a", input_tokens=9000, output_tokens=1000, cost_usd=3.0),  # no duration
    ]
    with Recorder(ledger_url) as rec:
        rec.record_many(events)
        body = build_report(rec.ledger, "agents", W)
        models = build_report(rec.ledger, "models", W)
    (agent,) = body["rows"]
    assert agent["tokens_per_s"] == 50.0  # 100 tokens in 2 s, not 10,100 in 2 s
    assert agent["cost_per_min"] == pytest.approx(15.0)  # $0.5 in 2 s
    assert agent["timed_requests"] == 1
    assert body["summary"]["tokens_per_s"] == 50.0
    assert body["summary"]["timed_requests"] == 1
    assert models["rows"][0]["tokens_per_s"] == 50.0
    assert "1 of 2 calls timed" in render(body, "text")


def test_query_rate_without_its_own_duration_covers_the_timed_calls(
    ledger_url: str,  # noqa: F811
) -> None:
    events = [
        _ev(query_id="q", input_tokens=90, output_tokens=10, duration_ms=1000.0),
        _ev(query_id="q", input_tokens=5000, output_tokens=0),
    ]
    with Recorder(ledger_url) as rec:
        rec.record_many(events)
        (row,) = build_report(rec.ledger, "queries", W)["rows"]
    assert row["tokens_per_s"] == 100.0
    assert row["timed_inferences"] == 1


# ---------------------------------------------------------------- 3. import into a running serve


def _requests_total(text: str) -> float:
    return sum(
        v for (name, _), v in exposition_samples(text).items() if name == "ai_requests_total"
    )


def test_import_into_a_running_sidecar_shows_in_metrics_and_view_alike(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def write_log(name: str, n: int) -> Path:
        log = tmp_path / name
        lines = [orjson.dumps(_ev(input_tokens=i + 1, service=name)).decode() for i in range(n)]
        log.write_text("\n".join(lines))
        return log

    rec = Recorder(ledger_url, instance="pod-a")
    with serve_app(create_app(rec, close_recorder=True)) as url:
        httpx.post(f"{url}/api/usage", json=[_ev(input_tokens=1)] * 5).raise_for_status()
        assert _cli(capsys, "import", str(write_log("a.log", 21)), "--db", ledger_url)[0] == 0
        # /metrics never waits on the database: the idle writer adopts within a second.
        deadline = time.monotonic() + 5
        while _requests_total(httpx.get(f"{url}/metrics").text) != 26:
            assert time.monotonic() < deadline, "the import never reached /metrics"
            time.sleep(0.1)
        assert httpx.get(f"{url}/api/metrics").json()["totals"]["requests"] == 26
        # The JSON view adopts before it reads, so /metrics right after it agrees.
        assert _cli(capsys, "import", str(write_log("b.log", 7)), "--db", ledger_url)[0] == 0
        assert httpx.get(f"{url}/api/metrics").json()["totals"]["requests"] == 33
        assert _requests_total(httpx.get(f"{url}/metrics").text) == 33
        # Later scrapes agree too, and nothing counts twice.
        time.sleep(1.5)
        assert _requests_total(httpx.get(f"{url}/metrics").text) == 33
        assert httpx.get(f"{url}/api/metrics?scope=fleet").json()["totals"]["requests"] == 33


# ---------------------------------------------------------------- 4. agents: step log, limit


def test_agents_step_log_in_csv_markdown_and_http(
    ledger_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = [
        _ev(agent="planner", task="plan", workflow_id="w1", step="1", input_tokens=10,
            duration_ms=100.0, timestamp=D0 + 3600),
        _ev(agent="writer", task="write", workflow_id="w1", step="2", input_tokens=20,
            duration_ms=200.0, timestamp=D0 + 3601),
        _ev(agent="other", task="t", input_tokens=30, timestamp=D0 + 3602),
    ]  # fmt: skip
    rec = Recorder(ledger_url)
    rec.record_many(events)
    args = ("--db", ledger_url, "--since", str(D0), "--until", str(D0 + 3 * DAY))
    code, out = _cli(capsys, "report", "agents", "--workflow", "w1", "--format", "csv", *args)
    assert code == 0
    # A CSV file holds one table: with --workflow it is the step log.
    steps = out.splitlines()
    assert steps[0].startswith("n,step,time,agent,task,tool,node,")
    assert [line.split(",")[:5:4] for line in steps[1:]] == [["1", "plan"], ["2", "write"]]
    code, out = _cli(capsys, "report", "agents", "--workflow", "w1", "--format", "markdown", *args)
    assert "execution log, workflow w1" in out
    assert "| 2 | 2 |" in out
    code, out = _cli(capsys, "report", "agents", "--limit", "1", "--format", "json", *args)
    assert [a["agent"] for a in orjson.loads(out)["rows"]] == ["other"]
    with serve_app(create_app(rec, close_recorder=True)) as url:
        r = httpx.get(
            f"{url}/api/reports/agents",
            params={"workflow": "w1", "format": "csv", "since": str(D0), "until": str(D0 + 3 * DAY),
                    "scope": "fleet"},
        )  # fmt: skip
        assert r.status_code == 200
        assert r.text.splitlines()[0].startswith("n,step,time,agent")
        assert len(r.text.splitlines()) == 3
        r = httpx.get(f"{url}/api/reports/agents", params={"limit": "1", "scope": "fleet",
                      "since": str(D0), "until": str(D0 + 3 * DAY)})  # fmt: skip
        assert [a["agent"] for a in r.json()["rows"]] == ["other"]


# ---------------------------------------------------------------- 6. one line, one count


SUMMARY: dict[str, Any] = {
    "event": "token_usage_summary",
    "query_id": "q-dup",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "inferences": [
        {"node_name": "manager", "prompt_tokens": 10, "completion_tokens": 1,
         "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(D0 + 3600))},
        {"node_name": "synthesizer", "prompt_tokens": 20, "completion_tokens": 2,
         "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(D0 + 3601))},
    ],
}  # fmt: skip


def test_a_summary_line_counts_once_however_it_arrives(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rec = Recorder(ledger_url)
    with serve_app(create_app(rec, close_recorder=True)) as url:
        first = httpx.post(f"{url}/api/usage", json=SUMMARY).json()
        again = httpx.post(f"{url}/api/usage", json=SUMMARY).json()
        assert (first, again) == (
            {"accepted": 2, "duplicates": 0},
            {"accepted": 0, "duplicates": 2},
        )
    log = tmp_path / "token_usage.log"
    log.write_text("TOKEN_USAGE: " + orjson.dumps(SUMMARY).decode() + "\n")
    code, out = _cli(capsys, "import", str(log), "--db", ledger_url)
    assert out.splitlines()[0].startswith("lines read 1, events accepted 0, duplicate 2")
    ledger = open_ledger(ledger_url)
    try:
        assert ledger.summary(scope="fleet")["totals"]["requests"] == 2
    finally:
        ledger.close()


# ---------------------------------------------------------------- the per-node view


def _graph_line(qid: str, user: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(D0 + 7200))
    return {
        "event": "token_usage_summary",
        "query_id": qid,
        "whatsapp": user,
        "provider": "openai",
        "model": model,
        "inferences": [
            {"node_name": "manager", "inference_type": "planning", "prompt_tokens": 100,
             "completion_tokens": 10, "timestamp": ts},
            {"node_name": "financiero_planificar", "inference_type": "tool_call",
             "prompt_tokens": 300, "completion_tokens": 30, "timestamp": ts},
            {"node_name": "synthesizer", "inference_type": "response", "prompt_tokens": 200,
             "completion_tokens": 20, "timestamp": ts},
        ],
    }  # fmt: skip


def test_nodes_are_the_agents_of_an_app_naming_no_agents(ledger_url: str) -> None:  # noqa: F811
    with Recorder(ledger_url) as rec:
        rec.record_many([_graph_line("q1", "+1"), _graph_line("q2", "+2")])
        body = build_report(rec.ledger, "agents", W)
        text = render(body, "text")
        view = rec.view(scope="fleet")
        from ai_usage_exporter.core.timeseries import parse_query

        q = parse_query({"by": ["node"], "metric": ["tokens"], "step": ["1h"],
                         "from": [str(D0)], "to": [str(D0 + DAY)], "scope": ["fleet"]}, D0 + DAY)  # fmt: skip
        series = rec.timeseries(q)["series"]
    assert [(a["agent"], a["requests"], a["total_tokens"]) for a in body["rows"]] == [
        ("financiero_planificar", 2, 660),
        ("synthesizer", 2, 440),
        ("manager", 2, 220),
    ]
    assert [(n["node"], n["inference_type"], n["requests"]) for n in body["nodes"]] == [
        ("financiero_planificar", "tool_call", 2),
        ("synthesizer", "response", 2),
        ("manager", "planning", 2),
    ]
    assert "Agent manager: 2 calls" in text
    assert "Node manager (planning): 2 calls" in text
    assert [(r["node"], r["requests"]) for r in view["by_node"]] == [
        ("financiero_planificar", 2), ("manager", 2), ("synthesizer", 2)
    ]  # fmt: skip
    assert {s["key"]: sum(s["values"]) for s in series} == {
        "financiero_planificar": 660, "synthesizer": 440, "manager": 220
    }  # fmt: skip


def test_reports_filter_by_service_tenant_model_and_user(
    ledger_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = [
        _ev(service="api", tenant="acme", user="u1", query_id="qa", input_tokens=10),
        _ev(service="api", tenant="beta", user="u2", query_id="qb", input_tokens=20),
        _ev(service="bot", tenant="acme", user="u1", query_id="qc", input_tokens=40,
            model="gpt-4o-mini-2024-07-18"),
        _ev(service="bot", tenant="acme", user="u3", query_id="qd", input_tokens=80,
            model="gpt-4o"),
    ]  # fmt: skip
    rec = Recorder(ledger_url)
    rec.record_many(events)
    rng = ("--db", ledger_url, "--since", str(D0), "--until", str(D0 + 3 * DAY))

    def daily_tokens(*flags: str) -> int:
        code, out = _cli(capsys, "report", "daily", "--format", "json", *flags, *rng)
        assert code == 0
        return sum(r["input_tokens"] for r in orjson.loads(out)["rows"])

    assert daily_tokens() == 150
    assert daily_tokens("--service", "bot") == 120
    assert daily_tokens("--tenant", "acme") == 130
    assert daily_tokens("--model", "gpt-4o-mini") == 70  # the dated snapshot too
    assert daily_tokens("--user", "u1") == 50
    assert daily_tokens("--user", "u1", "--service", "bot") == 40
    code, out = _cli(capsys, "report", "queries", "--user", "u1", "--format", "json", *rng)
    assert sorted(r["query_id"] for r in orjson.loads(out)["rows"]) == ["qa", "qc"]
    code, out = _cli(capsys, "report", "models", "--format", "json", "--user", "u1", *rng)
    assert [(r["model"], r["requests"]) for r in orjson.loads(out)["rows"]] == [("gpt-4o-mini", 2)]
    with serve_app(create_app(rec, close_recorder=True)) as url:
        params = {"since": str(D0), "until": str(D0 + 3 * DAY), "scope": "fleet"}

        def http_tokens(**more: str) -> int:
            r = httpx.get(f"{url}/api/reports/daily", params={**params, **more})
            assert r.status_code == 200, r.text
            return sum(row["input_tokens"] for row in r.json()["rows"])

        assert http_tokens(service="bot") == 120
        assert http_tokens(tenant="acme", user="u3") == 80
        assert http_tokens(model="gpt-4o-mini") == 70
        body = httpx.get(f"{url}/api/reports/queries", params={**params, "user": "u2"}).json()
        assert [r["query_id"] for r in body["rows"]] == ["qb"]
        assert body["filters"] == {"user": "u2"}


def test_one_model_one_row_while_the_ledger_keeps_the_served_name(
    ledger_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = [
        _ev(model="gpt-4o-mini-2024-07-18", input_tokens=10),
        _ev(model="gpt-4o-mini", input_tokens=20),
        _ev(model="gpt-4o", input_tokens=40),
    ]
    with Recorder(ledger_url) as rec:
        rec.record_many(events)
        body = build_report(rec.ledger, "models", W, model_name=rec.prices.canonical_model)
        from ai_usage_exporter.core.timeseries import parse_query

        q = parse_query({"by": ["model"], "metric": ["tokens"], "step": ["1h"],
                         "from": [str(D0)], "to": [str(D0 + DAY)], "scope": ["fleet"]}, D0 + DAY)  # fmt: skip
        series = rec.timeseries(q)["series"]
        served = sorted({e["model"] for e in rec.ledger.events()})
        view = rec.view(scope="fleet")
    assert sorted((m["model"], m["tokens"]["input_tokens"]) for m in view["by_model"]) == [
        ("gpt-4o", 40), ("gpt-4o-mini", 30)
    ]  # fmt: skip
    assert [(r["model"], r["input_tokens"]) for r in body["rows"]] == [
        ("gpt-4o-mini", 30), ("gpt-4o", 40)
    ] or [(r["model"], r["input_tokens"]) for r in body["rows"]] == [
        ("gpt-4o", 40), ("gpt-4o-mini", 30)
    ]  # fmt: skip
    assert {s["key"]: sum(s["values"]) for s in series} == {
        "openai/gpt-4o-mini": 30, "openai/gpt-4o": 40
    }  # fmt: skip
    assert served == ["gpt-4o", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"]
    code, out = _cli(capsys, "query", "--model", "gpt-4o-mini", "--db", ledger_url,
                     "--format", "json")  # fmt: skip
    assert sorted(c["model"] for c in orjson.loads(out)) == [
        "gpt-4o-mini", "gpt-4o-mini-2024-07-18"
    ]  # fmt: skip


# ---------------------------------------------------------------- naive timestamps


def _naive_line(qid: str) -> dict[str, Any]:
    return {
        "event": "token_usage_summary",
        "query_id": qid,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "start_time": "2026-11-20T09:00:00",
        "inferences": [
            {"node_name": "manager", "prompt_tokens": 1, "completion_tokens": 1,
             "timestamp": "2026-11-20T09:00:01"},
        ],
    }  # fmt: skip


def test_naive_timestamps_are_read_in_the_configured_zone_on_import_and_post(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ai_usage_exporter.compose import build_recorder
    from ai_usage_exporter.config.settings import resolve

    config = tmp_path / "c.yml"
    config.write_text("naive_timezone: America/Argentina/Buenos_Aires\n")
    db = str(tmp_path / "l.db")
    settings = resolve({"db": db, "config": str(config)}, environ={})
    assert settings.limits.naive_timezone == "America/Argentina/Buenos_Aires"
    log = tmp_path / "app.log"
    log.write_text(
        "TOKEN_USAGE "
        + orjson.dumps(_naive_line("imported")).decode()
        + "\n"
        # A logger's own fields, with its naive timestamp.
        + orjson.dumps(
            {
                "level": "info",
                "logger": "app",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "input_tokens": 3,
                "output_tokens": 1,
                "timestamp": "2026-11-20 09:00:02",
            }
        ).decode()
        + "\n"  # fmt: skip
    )
    code, _ = _cli(capsys, "import", str(log), "--db", db, "--config", str(config))
    assert code == 0
    rec = build_recorder(settings)
    with serve_app(create_app(rec, close_recorder=True)) as url:
        r = httpx.post(f"{url}/api/usage", json=_naive_line("posted"))
        assert r.status_code == 200, r.text
    ledger = open_ledger(db)
    try:
        rows = {(e["query_id"], e["ts"], e["query_start"]) for e in ledger.events()}
    finally:
        ledger.close()
    # 09:00 in Buenos Aires (UTC-3) is 12:00 UTC.
    noon = 1_795_176_000.0  # 2026-11-20T12:00:00Z
    assert rows == {
        ("imported", noon + 1, noon),
        ("posted", noon + 1, noon),
        (None, noon + 2, None),
    }


def test_a_misspelt_time_zone_is_refused_at_start(tmp_path: Path) -> None:
    from ai_usage_exporter.config.fields import ConfigError
    from ai_usage_exporter.config.settings import resolve

    config = tmp_path / "c.yml"
    config.write_text("naive_timezone: America/Buenos_Aries\n")
    with pytest.raises(ConfigError, match="naive_timezone.*America/Buenos_Aries"):
        resolve({"config": str(config)}, environ={})
    with pytest.raises(ConfigError, match="AI_USAGE_EXPORTER_NAIVE_TIMEZONE"):
        resolve({}, environ={"AI_USAGE_EXPORTER_NAIVE_TIMEZONE": "Mars/Olympus"})


# ---------------------------------------------------------------- smaller things


def test_query_says_how_many_it_left_out_and_refuses_a_negative_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "l.db")
    with Recorder(db) as rec:
        rec.record_many([_ev(input_tokens=i + 1, user="u") for i in range(45)])
    code = main(["query", "--db", db, "--format", "json"])
    captured = capsys.readouterr()
    assert code == 0
    assert len(orjson.loads(captured.out)) == 10
    assert captured.err == "10 of 45 calls, newest first; --limit 45 lists them all\n"
    code = main(["query", "--db", db, "--limit", "-5"])
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    assert "limit: must be a positive number of calls, got -5" in captured.err
    code = main(["query", "--db", db, "--limit", "50", "--format", "csv"])
    captured = capsys.readouterr()
    assert (len(captured.out.splitlines()), captured.err) == (46, "")


def test_query_into_head_exits_quietly(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = str(tmp_path / "l.db")
    with Recorder(db) as rec:
        rec.record_many([_ev(input_tokens=i + 1) for i in range(3000)])
    cmd = f"{sys.executable} -m ai_usage_exporter query --db {db} --limit 3000 | head -n 2"
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
    assert r.stderr == ""
    assert len(r.stdout.splitlines()) == 2


def test_unpriced_calls_are_marked_with_a_did_you_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "l.db")
    with Recorder(db) as rec:
        rec.record_many(
            [_ev(model="gpt-4o-mnii", input_tokens=10), _ev(model="gpt-4o-mini", input_tokens=10)]
        )
    rng = ("--db", db, "--since", str(D0), "--until", str(D0 + 3 * DAY))
    code, out = _cli(capsys, "report", "models", *rng)
    lines = out.splitlines()
    assert [line.split()[1] for line in lines[2:4]] == ["gpt-4o-mini", "gpt-4o-mnii"]
    assert "unpriced" in lines[3] and "unpriced" not in lines[2]
    assert lines[-1] == (
        "1 calls of openai/gpt-4o-mnii have no price and count as $0; did you mean "
        "'gpt-4o-mini'? (see `ai-usage-exporter prices`, docs/pricing.md)"
    )
    code, out = _cli(capsys, "report", "daily", "--format", "json", *rng)
    body = orjson.loads(out)
    assert body["rows"][0]["unpriced_requests"] == 1
    assert body["unpriced"] == [
        {"provider": "openai", "model": "gpt-4o-mnii", "requests": 1,
         "did_you_mean": "gpt-4o-mini"}
    ]  # fmt: skip
    code, out = _cli(capsys, "query", "--db", db)
    marked = [line for line in out.splitlines() if "unpriced" in line]
    assert len(marked) == 1 and "gpt-4o-mnii" in marked[0]
    code = main(["prices", "gpt-4o-mnii", "--provider", "openai"])
    assert code == 1
    assert "no price for 'gpt-4o-mnii' (did you mean 'gpt-4o-mini'?)" in capsys.readouterr().err


def test_costs_print_without_float_noise_and_empty_reports_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "l.db")
    with Recorder(db) as rec:
        rec.record_many(
            [
                _ev(query_id="q", workflow_id="w", cost_usd=0.1, input_tokens=1),
                _ev(query_id="q", workflow_id="w", cost_usd=0.2, input_tokens=1),
            ]
        )
    rng = ("--db", db, "--since", str(D0), "--until", str(D0 + 3 * DAY))
    code, out = _cli(capsys, "report", "queries", "--format", "csv", *rng)
    header, row = out.splitlines()
    assert dict(zip(header.split(","), row.split(","), strict=False))["cost_usd"] == "0.3"
    code, out = _cli(capsys, "report", "queries", "--format", "json", *rng)
    assert b"0.30000000000000004" not in out.encode()
    code, out = _cli(capsys, "report", "daily", "--service", "nope", *rng)
    assert out.splitlines()[1] == (
        f"no calls in {_iso_z(D0)} .. {_iso_z(D0 + 3 * DAY)} matching service=nope"
    )
    code, out = _cli(capsys, "report", "agents", "--format", "markdown", "--user", "x", *rng)
    assert "no calls in" in out


def _iso_z(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def test_the_text_daily_report_shows_cached_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "l.db")
    with Recorder(db) as rec:
        rec.record_many([_ev(input_tokens=100, cached_input_tokens=60, output_tokens=5)])
    code, out = _cli(capsys, "report", "daily", "--db", db, "--since", str(D0),
                     "--until", str(D0 + 3 * DAY))  # fmt: skip
    header, row = out.splitlines()[1:3]
    assert dict(zip(header.split(), row.split(), strict=True))["cached_input_tokens"] == "60"


def test_a_pretty_printed_record_is_not_counted_as_skipped_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    log = tmp_path / "app.log"
    pretty = json.dumps(SUMMARY, indent=2)
    log.write_text(
        f"2026-11-20 10:00:00,001 INFO app: TOKEN_USAGE {pretty}\n"
        "2026-11-20 10:00:00,002 INFO app: unrelated\n"
        '{\n  "not": "usage"\n}\n'
    )
    lines = 1 + pretty.count("\n") + 1 + 3
    code, out = _cli(capsys, "import", str(log), "--db", str(tmp_path / "l.db"))
    assert out.splitlines()[0] == (
        f"lines read {lines}, events accepted 2, duplicate 0, lines rejected 0, skipped 4"
    )


def test_two_sidecars_adopting_at_once_take_each_row_once() -> None:
    import threading

    from _pg import fresh_schema

    with fresh_schema() as url:
        a, b = Recorder(url, instance="pod-a"), Recorder(url, instance="pod-b")
        try:
            tool = Recorder(open_ledger(url))  # as `import` does: unassigned rows
            tool.record_many([_ev(input_tokens=1, model=f"m{i % 7}") for i in range(300)])
            tool.close()
            got: list[int] = []
            threads = [
                threading.Thread(target=lambda r=r: got.append(r.adopt_unadopted()))
                for r in (a, b) * 3
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sum(got) == 300
            counted = _requests_total(a.exposition().decode()) + _requests_total(
                b.exposition().decode()
            )
            assert counted == 300
            assert a.view(scope="fleet")["totals"]["requests"] == 300
            assert a.view()["totals"]["requests"] + b.view()["totals"]["requests"] == 300
        finally:
            a.close()
            b.close()


def test_a_report_from_the_events_equals_the_one_from_the_buckets(
    ledger_url: str,  # noqa: F811
) -> None:
    # Filtering by user sums the events; with every call of one user it must give what
    # the buckets give, to the nanodollar and the microsecond.
    events = [
        _ev(user="u", agent=f"a{i % 3}", task="t", model=("gpt-4o", "gpt-4o-mini", "nope")[i % 3],
            input_tokens=17 * i + 3, output_tokens=i, cached_input_tokens=i % 5,
            cost_usd=None if i % 3 != 1 else 0.000123 * i,
            duration_ms=None if i % 4 == 0 else 12.3456 * i, status="error" if i % 7 == 0 else "ok",
            timestamp=D0 + (i % 3) * DAY + 60 * i)
        for i in range(60)
    ]  # fmt: skip
    events = [{k: v for k, v in e.items() if v is not None} for e in events]
    with Recorder(ledger_url) as rec:
        rec.record_many(events)
        for name in ("daily", "models", "agents", "services", "tenants"):
            plain = build_report(rec.ledger, name, W)
            by_user = build_report(rec.ledger, name, W, filters={"user": "u"})
            by_user.pop("filters")
            assert by_user == plain, name


def test_two_sidecars_on_one_file_do_not_take_each_others_rows(tmp_path: Path) -> None:
    # A mistake (one file, two sidecars), but it must not make counters grow by themselves.
    db = str(tmp_path / "l.db")
    a = Recorder(db, instance="pod-a")
    a.record_many([_ev(input_tokens=1)] * 4)
    b = Recorder(db, instance="pod-b")  # adopts pod-a's rows at open, as it always did
    try:
        b.record_many([_ev(input_tokens=2)] * 3)
        time.sleep(2.5)  # both writers idle past their adoption rounds
        assert a.adopt_unadopted() == b.adopt_unadopted() == 0
        assert _requests_total(a.exposition().decode()) == 4
        assert _requests_total(b.exposition().decode()) == 7
    finally:
        a.close()
        b.close()
