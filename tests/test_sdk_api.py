"""The SDK's pure and in-process parts: track_token_usage's mapping, usage_context,
enable/disable, sessions, in-process budgets, and the sender's counted drops."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from _sdk import in_process, reset_sdk
from ai_usage_exporter import (
    OPERATION_EMBEDDING,
    TOKEN_TYPE_EMBEDDING,
    Budget,
    BudgetExceeded,
    configure,
    disable,
    enable,
    flush,
    session,
    track_token_usage_sync,
    usage_context,
)
from ai_usage_exporter.core.events.parse import parse_events
from ai_usage_exporter.sdk import core, hub, stats
from ai_usage_exporter.sdk.budget import BudgetBook
from ai_usage_exporter.sdk.track import usage_event
from ai_usage_exporter.sdk.transport import HttpTransport
from ai_usage_exporter.server import create_app


def test_metadata_fills_provider_and_split() -> None:
    e = usage_event(tenant_id="t1", tokens=150, model="m", operation="query",
                    metadata={"provider": "groq", "input_tokens": 100, "output_tokens": 50, "x": 1})  # fmt: skip
    assert e == {"model": "m", "provider": "groq", "operation": "query", "tenant": "t1",
                 "input_tokens": 100, "output_tokens": 50, "metadata": {"x": 1}}  # fmt: skip


def test_metadata_fills_the_newer_kinds_and_counts() -> None:
    meta = {"provider": "google", "input_tokens": 100, "output_tokens": 50,
            "image_output_tokens": 40, "cache_write_1h_tokens": 0, "web_search_requests": 2}  # fmt: skip
    e = usage_event(model="m", metadata=meta)
    assert e == {"model": "m", **meta}
    assert parse_events([e])[0].image_output_tokens == 40


def test_embedding_tokens_are_input_tokens() -> None:
    e = usage_event(tokens=42, model="text-embedding-3-small", token_type=TOKEN_TYPE_EMBEDDING,
                    metadata={"provider": "openai"})  # fmt: skip
    assert (e["operation"], e["input_tokens"], "output_tokens" in e) == (
        OPERATION_EMBEDDING,
        42,
        False,
    )


def test_unsplit_llm_total_is_never_guessed(tmp_path: Path) -> None:
    e = usage_event(tokens=500, model="m", metadata={"provider": "groq"})
    assert "input_tokens" not in e and "output_tokens" not in e
    assert (e["level"], e["metadata"]) == ("warn", {"unsplit_total": 500})
    with in_process(tmp_path) as r:
        track_token_usage_sync(tokens=500, model="m", metadata={"provider": "groq"})
        assert flush(10)
        (row,) = r.ledger.events()
    assert (row["input_tokens"], row["output_tokens"], row["level"]) == (0, 0, "warn")
    assert json.loads(row["metadata"]) == {"unsplit_total": 500}


def test_bad_token_type_is_refused() -> None:
    with pytest.raises(ValueError, match="token_type"):
        usage_event(tokens=1, model="m", token_type="image")


def test_usage_context_nests_decorates_and_isolates_tasks(tmp_path: Path) -> None:
    @usage_context(tool="search")
    def call(n: int) -> None:
        track_token_usage_sync(
            model="m", metadata={"provider": "p", "input_tokens": n, "output_tokens": 0}
        )

    async def agent(name: str, n: int) -> None:
        with usage_context(agent=name):
            await asyncio.sleep(0)
            call(n)

    async def both() -> None:
        await asyncio.gather(agent("a", 1), agent("b", 2))

    with in_process(tmp_path) as r:
        with usage_context(workflow_id="wf", agent="outer"), usage_context(task="t", step=3):
            call(0)
        asyncio.run(both())
        assert flush(10)
        got = [(e["input_tokens"], e["agent"], e["task"], e["tool"], e["workflow_id"], e["step"])
               for e in sorted(r.ledger.events(), key=lambda e: e["ts"])]  # fmt: skip
    assert got == [(0, "outer", "t", "search", "wf", "3"), (1, "a", None, "search", None, None),
                   (2, "b", None, "search", None, None)]  # fmt: skip
    with pytest.raises(TypeError, match="unknown field"):
        usage_context(colour="blue")


def test_disable_and_enable(tmp_path: Path) -> None:
    with in_process(tmp_path) as r:
        disable()
        track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 1})
        enable()
        track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 2})
        assert flush(10)
        assert [e["input_tokens"] for e in sorted(r.ledger.events(), key=lambda e: e["ts"])] == [2]


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_USAGE_EXPORTER_DISABLED", "1")
    reset_sdk()
    hub._hub.__init__()  # type: ignore[misc]
    assert core.is_enabled() is False
    reset_sdk()


def test_session_summary_json_csv_and_display(tmp_path: Path) -> None:
    with in_process(tmp_path):
        with session("run-1") as s:
            with usage_context(agent="planner", task="plan"):
                track_token_usage_sync(model="gpt-4o-mini", duration_ms=1000.0,
                                       metadata={"provider": "openai", "input_tokens": 1000, "output_tokens": 200})  # fmt: skip
            with usage_context(agent="coder", tool="python"):
                track_token_usage_sync(model="gpt-4o-mini", duration_ms=500.0,
                                       metadata={"provider": "openai", "input_tokens": 10, "output_tokens": 50})  # fmt: skip
        track_token_usage_sync(model="outside", metadata={"provider": "p", "input_tokens": 1})
    summary = s.summary()
    t = summary["totals"]
    assert (t["requests"], t["tokens"]["input_tokens"], t["tokens"]["output_tokens"]) == (
        2,
        1010,
        250,
    )
    assert t["duration_seconds"] == 1.5 and t["tokens_per_second"] == 250 / 1.5
    # gpt-4o-mini at $0.15 / $0.60 per million tokens (genai-prices).
    assert t["cost_usd"] == pytest.approx(1010 * 0.15e-6 + 250 * 0.6e-6)
    assert [(a["agent"], a["requests"]) for a in summary["by_agent"]] == [
        ("planner", 1),
        ("coder", 1),
    ]
    assert [x["tool"] for x in summary["by_tool"]] == ["", "python"]
    assert json.loads(s.to_json())["totals"]["requests"] == 2
    rows = list(csv.DictReader(io.StringIO(s.to_csv())))
    assert rows[0]["group"] == "total" and rows[0]["input_tokens"] == "1010"
    text = s.display(file=io.StringIO())
    assert "planner: 1 calls" in text and "tool python" in text and "task plan" in text


def test_in_process_budget_reads_the_ledger_so_restarts_do_not_reset(tmp_path: Path) -> None:
    with in_process(tmp_path) as r:
        track_token_usage_sync(tenant_id="acme", model="m",
                               metadata={"provider": "p", "input_tokens": 900, "output_tokens": 100})  # fmt: skip
        assert flush(10)
        # A new budget book (as after a restart) starts from the ledger's 1000 tokens.
        b = Budget("tenant", tokens=1000, on_exceed="raise")
        hub._hub.budgets = book = BudgetBook([b])
        assert book.used(b, "acme") == (1000, 0.0)
        with pytest.raises(BudgetExceeded, match="1000 of 1000 tokens"):
            core.check_budgets({"tenant": "acme"})
        core.check_budgets({"tenant": "other"})  # its own key, unused
        assert r is not None


def test_warn_budget_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with in_process(tmp_path):
        b = Budget(tokens=100, period="run", warn_at=0.5)
        hub._hub.budgets = BudgetBook([b])
        for _ in range(3):
            track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 40})
        assert stats()["budget_warnings"] == 1
        assert sum("used up" in m for m in caplog.messages) == 1
        core.check_budgets({})  # warn budgets never raise


def test_full_queue_drops_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    reset_sdk()
    # Nothing listens on port 9; the sender keeps retrying and the queue fills.
    configure(url="http://127.0.0.1:9", max_queue=5)
    for _ in range(8):
        track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 1})
    t = hub._hub.transport
    assert isinstance(t, HttpTransport)
    assert t.dropped["queue_full"] >= 3
    assert any("dropped" in m for m in caplog.messages)
    reset_sdk()
    assert t.dropped["not_delivered_at_exit"] + t.dropped["queue_full"] == 8 - t.delivered


def test_no_destination_warns_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AI_USAGE_EXPORTER_URL", raising=False)
    reset_sdk()
    track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 1})
    track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 1})
    assert stats()["dropped"] == {"unconfigured": 2}
    assert sum("no destination" in m for m in caplog.messages) == 1
    reset_sdk()


def test_sidecar_budgets_config_errors_name_the_budget(tmp_path: Path) -> None:
    from ai_usage_exporter.config.fields import ConfigError
    from ai_usage_exporter.config.settings import load_file

    path = tmp_path / "c.yaml"
    path.write_text("budgets:\n  - {name: b, scope: planet, tokens: 5}\n")
    with pytest.raises(ConfigError, match="budget 'b': scope must be one of .* got 'planet'"):
        load_file(str(path))
    path.write_text("budgets:\n  - {name: b, scope: tenant}\n")
    with pytest.raises(ConfigError, match="give tokens, usd or both"):
        load_file(str(path))
    path.write_text("budgets:\n  - {name: b, tokens: 5, period: run}\n")
    with pytest.raises(ConfigError, match="period run is for in-process budgets"):
        load_file(str(path))
    path.write_text("budgets:\n  - {name: b, tokens: 5, period: month, match: x}\n")
    with pytest.raises(ConfigError, match="a total budget takes no match"):
        load_file(str(path))


def test_budget_gauge_rows_are_exact() -> None:
    import math

    from ai_usage_exporter.core.budgets import BudgetSpec, Usage, gauges, period_start

    spec = BudgetSpec(name="b", scope="tenant", tokens=1000, usd=2.0, period="month")
    rows = gauges(spec, "acme", Usage(400, 0.5, 3), Usage(100, 0.0, 1))
    assert [
        (r["unit"], r["limit"], r["used"], r["remaining"], r["hours_to_exhaustion"]) for r in rows
    ] == [
        ("tokens", 1000.0, 400.0, 600.0, 6.0),
        ("usd", 2.0, 0.5, 1.5, math.inf),
    ]
    # 2026-03-15T12:00:00Z: the month began on the 1st, the day at midnight (UTC).
    now = 1773576000.0
    assert period_start("month", now, 0.0) == 1772323200.0
    assert period_start("day", now, 0.0) == 1773532800.0
    assert period_start("run", now, 123.0) == 123.0


def test_http_sender_drops_only_the_events_the_sidecar_rejects(tmp_path: Path) -> None:
    from _server import serve_app
    from ai_usage_exporter import Recorder

    reset_sdk()
    recorder = Recorder(str(tmp_path / "s.db"))
    try:
        with serve_app(create_app(recorder)) as url:
            configure(url=url)
            track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 1})
            # Invalid: cached tokens exceed input tokens; the sidecar answers 422 naming it.
            track_token_usage_sync(model="m", input_tokens=1, cached_input_tokens=5, provider="p")
            track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 3})
            assert flush(10)
            t = hub._hub.transport
            assert t is not None and t.dropped == {"rejected": 1} and t.delivered == 2
            assert sorted(e["input_tokens"] for e in recorder.ledger.events()) == [1, 3]
    finally:
        reset_sdk()
        recorder.close()


# Python 3.12+ warns about fork() in a threaded process; this test forks on purpose.
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_sends_its_own_events_only(tmp_path: Path) -> None:
    import os

    from _server import serve_app
    from ai_usage_exporter import Recorder

    reset_sdk()
    recorder = Recorder(str(tmp_path / "s.db"))
    try:
        with serve_app(create_app(recorder)) as url:
            configure(url=url)
            track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 1})
            pid = os.fork()
            if pid == 0:  # the child: its own event only, then out without the parent's atexit
                track_token_usage_sync(model="m", metadata={"provider": "p", "input_tokens": 2})
                os._exit(0 if flush(10) else 1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert flush(10)
            assert sorted(e["input_tokens"] for e in recorder.ledger.events()) == [1, 2]
    finally:
        reset_sdk()
        recorder.close()


def test_recorder_view_shows_budgets_with_null_for_no_burn(tmp_path: Path) -> None:
    from ai_usage_exporter import Recorder
    from ai_usage_exporter.core.budgets import BudgetSpec

    spec = BudgetSpec(name="all", tokens=1000, period="day")
    with Recorder(str(tmp_path / "v.db"), budgets=[spec]) as r:
        (row,) = r.view()["budgets"]
        assert row == {"budget": "all", "scope": "total", "key": "", "period": "day",
                       "unit": "tokens", "limit": 1000.0, "used": 0.0, "remaining": 1000.0,
                       "hours_to_exhaustion": None}  # fmt: skip
        r.record(provider="p", model="m", input_tokens=250)
        r.flush()
        (row,) = r.view()["budgets"]
        # 250 in the last hour, 750 left: three hours at that rate.
        assert (row["used"], row["remaining"], row["hours_to_exhaustion"]) == (250.0, 750.0, 3.0)
        assert "ai_budget_hours_to_exhaustion" in r.exposition().decode()
