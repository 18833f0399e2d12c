"""`reconcile` end to end: a fake of both admin APIs on a free port (see _fake_admin.py
for the documented and recorded shapes it serves), a real ledger (SQLite file and
PostgreSQL), the real CLI, and exact figures."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from _fake_admin import (
    FakeAdmin,
    Raw,
    anthropic_cost,
    anthropic_usage,
    openai_cost,
    openai_usage,
)

from _pg import fresh_schema
from _server import scrape, serve_app, server_process
from ai_usage_exporter import Recorder
from ai_usage_exporter.cli.main import main
from ai_usage_exporter.config.reconcile import ProviderSettings, ReconcileSettings
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.ledger import open_ledger
from ai_usage_exporter.reconcile import service

DAY = 86_400
NOW = time.time()
TODAY = int(NOW // DAY * DAY)
D1, D2, D3 = TODAY - 3 * DAY, TODAY - 2 * DAY, TODAY - DAY
# Exact rates, so every expected dollar is arithmetic on the test's own numbers.
PRICES = """
prices:
  providers:
    openai:
      models:
        gpt-4o: {input: 2.5, output: 10, cached_input: 1.25}
    anthropic:
      models:
        claude-sonnet-4-20250514: {input: 3, output: 15, cached_input: 0.3, cache_write: 3.75, cache_write_1h: 6}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        open_ledger(str(path)).close()
        yield str(path)
    else:
        with fresh_schema() as url:
            yield url


@pytest.fixture
def fake() -> Iterator[tuple[FakeAdmin, str]]:
    admin = FakeAdmin()
    with serve_app(admin.app()) as url:
        yield admin, url


def _config(tmp_path: Path, url: str, extra: str = "") -> str:
    cfg = tmp_path / "config.yml"
    cfg.write_text(
        PRICES
        + f"""
reconcile:
  interval: 1h
  providers:
    openai: {{admin_key_env: TEST_OPENAI_ADMIN, base_url: "{url}"}}
    anthropic: {{admin_key_env: TEST_ANTHROPIC_ADMIN, base_url: "{url}"}}
{extra}"""
    )
    return str(cfg)


def _record(db: str, *events: dict[str, Any]) -> None:
    with Recorder(db, prices=PriceBook(_prices())) as rec:
        for e in events:
            rec.record(**e)
        rec.flush()


def _prices() -> dict[str, Any]:
    import yaml

    prices: dict[str, Any] = yaml.safe_load(PRICES)["prices"]
    return prices


def _run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAdmin,
    *args: str,
) -> tuple[int, str, str]:
    monkeypatch.setenv("TEST_OPENAI_ADMIN", fake.openai_key)
    monkeypatch.setenv("TEST_ANTHROPIC_ADMIN", fake.anthropic_key)
    code = main(["reconcile", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _week(fake: FakeAdmin) -> None:
    """Three closed days: 1M input (200k cached) + 100k output of gpt-4o a day, billed
    at the price book's rates, in amounts of every shape the API was seen to send."""
    for day, value_in, value_cached, value_out in (
        (D1, Raw("2.0"), "0.25", Raw("1.0")),  # numbers and a decimal string
        (D2, "2.00", Raw("2.5E-1"), "1E+0"),  # exponent forms
        (D3, Raw("2"), "0.250000000", Raw("1.00")),
    ):
        fake.openai[day] = {
            "costs": [
                openai_cost("gpt-4o-2024-08-06, input", value_in),
                openai_cost("gpt-4o-2024-08-06, cached input", value_cached),
                openai_cost("gpt-4o-2024-08-06, output", value_out),
            ],
            "completions": [
                openai_usage(
                    "gpt-4o-2024-08-06",
                    input_tokens=1_000_000,
                    input_cached_tokens=200_000,
                    output_tokens=100_000,
                )
            ],
            "embeddings": [],
        }
    # Anthropic: cents as decimal strings; 1M uncached input at $3 is "300" cents.
    fake.anthropic[D3] = {
        "usage": [
            anthropic_usage(
                "claude-sonnet-4-20250514",
                uncached=1_000_000,
                cache_read=500_000,
                write_5m=100_000,
                output=200_000,
            )
        ],  # fmt: skip
        "costs": [
            anthropic_cost("claude-sonnet-4-20250514", "uncached_input_tokens", "300"),
            anthropic_cost("claude-sonnet-4-20250514", "cache_read_input_tokens", "15.0"),
            anthropic_cost(
                "claude-sonnet-4-20250514", "cache_creation.ephemeral_5m_input_tokens", "37.5"
            ),
            anthropic_cost("claude-sonnet-4-20250514", "output_tokens", "3.0E+2"),
        ],
    }


def _events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for day in (D1, D2, D3):
        out.append(
            {
                "provider": "openai",
                "model": "gpt-4o",
                "input_tokens": 1_000_000,
                "cached_input_tokens": 200_000,
                "output_tokens": 100_000,
                "timestamp": day + 3600,
                "idempotency_key": f"oa-{day}",
            }
        )
    out.append(
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4-20250514",
            "input_tokens": 1_600_000,
            "cached_input_tokens": 500_000,
            "cache_write_tokens": 100_000,
            "output_tokens": 200_000,
            "timestamp": D3 + 7200,
            "idempotency_key": "an-1",
        }
    )
    return out


def _since() -> str:
    return str(D1)


def test_known_events_reconcile_to_exact_ratios(
    db: str,
    tmp_path: Path,
    fake: tuple[FakeAdmin, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, url = fake
    _week(admin)
    _record(db, *_events())
    code, out, err = _run(
        capsys, monkeypatch, admin, "--db", db, "--config", _config(tmp_path, url),
        "--since", _since(), "--until", str(TODAY), "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    body = orjson.loads(out)
    rows = {(r["day"], r["provider"], r["model"]): r for r in body["rows"]}
    days = [time.strftime("%Y-%m-%d", time.gmtime(d)) for d in (D1, D2, D3)]
    assert sorted(rows) == sorted(
        [(d, "openai", "gpt-4o") for d in days] + [(days[2], "anthropic", "claude-sonnet-4-0")]
    )
    for d in days:
        r = rows[(d, "openai", "gpt-4o")]
        assert r["billed_usd"] == 3.25 and r["recorded_usd"] == 3.25
        assert r["capture_ratio"] == 1.0 and r["difference_usd"] == 0.0
        tokens = {"input": 1_000_000, "output": 100_000, "cached_input": 200_000, "cache_write": 0}
        assert r["billed_tokens"] == tokens and r["recorded_tokens"] == tokens
        assert r["billed_models"] == ["gpt-4o-2024-08-06"] and r["recorded_models"] == ["gpt-4o"]
        assert "untracked_spend" not in r["flags"] and "price_drift" not in r["flags"]
    a = rows[(days[2], "anthropic", "claude-sonnet-4-0")]
    # 1M * $3 + 0.5M * $0.30 + 0.1M * $3.75 + 0.2M * $15 = $6.525
    assert a["billed_usd"] == 6.525 and a["recorded_usd"] == 6.525 and a["capture_ratio"] == 1.0
    assert a["billed_tokens"] == {
        "input": 1_600_000, "output": 200_000, "cached_input": 500_000, "cache_write": 100_000,
    }  # fmt: skip
    assert body["totals"]["openai"]["billed_usd"] == 9.75
    assert body["totals"]["openai"]["capture_ratio"] == 1.0
    assert body["scope"] == {"openai": "organization-wide", "anthropic": "organization-wide"}
    # A week of buckets took several pages of each report; every day was asked once.
    paths = [p for p, _, _ in admin.requests]
    assert paths.count("/v1/organization/costs") == 2  # 3 days, 2 buckets a page
    costs_params = dict(admin.requests[0][1])
    assert costs_params["bucket_width"] == "1d" and costs_params["group_by[]"] == "line_item"


def test_unrecorded_call_is_untracked_spend_with_the_exact_missing_tokens(
    db: str,
    tmp_path: Path,
    fake: tuple[FakeAdmin, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, url = fake
    _week(admin)
    # The provider billed one more call on D2 than reached the sidecar: 12,345 input
    # and 678 output tokens at $2.50 / $10 per 1M.
    bill = admin.openai[D2]
    bill["completions"].append(
        openai_usage("gpt-4o-2024-08-06", input_tokens=12_345, output_tokens=678)
    )
    bill["costs"] += [
        openai_cost("batch | gpt-4o-2024-08-06, input", "0.0308625"),
        openai_cost("gpt-4o-2024-08-06, output", Raw("6.78e-3")),
    ]
    _record(db, *_events())
    code, out, _ = _run(
        capsys, monkeypatch, admin, "--db", db, "--config", _config(tmp_path, url),
        "--provider", "openai", "--since", _since(), "--until", str(TODAY), "--format", "json",
    )  # fmt: skip
    assert code == 1
    body = orjson.loads(out)
    (r,) = [r for r in body["rows"] if r["day"] == time.strftime("%Y-%m-%d", time.gmtime(D2))]
    assert r["flags"] == ["untracked_spend"]
    assert r["missing_tokens"] == {
        "input": 12_345,
        "output": 678,
        "cached_input": 0,
        "cache_write": 0,
    }
    assert r["billed_nusd"] == 3_250_000_000 + 30_862_500 + 6_780_000
    assert r["recorded_nusd"] == 3_250_000_000
    assert r["capture_ratio"] == 3_250_000_000 / 3_287_642_500
    others = [x for x in body["rows"] if x is not r]
    assert all(x["flags"] == [] for x in others)


def test_wrong_override_rate_is_price_drift_naming_the_rate(
    tmp_path: Path,
    fake: tuple[FakeAdmin, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, url = fake
    _week(admin)
    # The price book says output is $12 per 1M; the provider billed $10: the events
    # are priced by the stale override, and the tokens agree.
    wrong = PRICES.replace("output: 10,", "output: 12,")
    import yaml

    stale = tmp_path / "stale.db"
    with Recorder(str(stale), prices=PriceBook(yaml.safe_load(wrong)["prices"])) as rec:
        for e in _events():
            rec.record(**e)
    cfg = tmp_path / "stale.yml"
    cfg.write_text(Path(_config(tmp_path, url)).read_text().replace("output: 10,", "output: 12,"))
    code, out, _ = _run(
        capsys, monkeypatch, admin, "--db", str(stale), "--config", str(cfg),
        "--provider", "openai", "--since", _since(), "--until", str(TODAY), "--format", "json",
    )  # fmt: skip
    assert code == 1
    body = orjson.loads(out)
    for r in body["rows"]:
        assert r["flags"] == ["price_drift"]
        assert r["recorded_usd"] == 3.45 and r["billed_usd"] == 3.25
        (drift,) = r["drifted_rates"]
        assert drift["kind"] == "output"
        assert drift["billed_per_1m"] == 10.0 and drift["price_book_per_1m"] == 12.0
    code, text, _ = _run(
        capsys, monkeypatch, admin, "--db", str(stale), "--config", str(cfg), "--no-fetch",
        "--provider", "openai", "--since", _since(), "--until", str(TODAY),
    )  # fmt: skip
    assert "price drift output: billed $10.0 per 1M tokens, price book $12.0" in text


def test_restated_day_replaces_the_old_figures_and_a_refetch_changes_nothing(
    db: str, fake: tuple[FakeAdmin, str]
) -> None:
    admin, url = fake
    _week(admin)
    settings = ReconcileSettings(providers={"openai": ProviderSettings("openai", "K", url)})
    env = {"K": admin.openai_key}
    ledger = open_ledger(db)
    try:
        assert service.fetch_and_store(ledger, settings, ["openai"], D1, TODAY, NOW, env) == {}
        first = ledger.provider_usage("openai", D1, TODAY)
        assert service.fetch_and_store(ledger, settings, ["openai"], D1, TODAY, NOW, env) == {}
        assert ledger.provider_usage("openai", D1, TODAY) == first
        # OpenAI restates D2: the output line is now $0.5 and 50,000 tokens, and the
        # cached input line is gone.
        admin.openai[D2]["costs"] = [
            openai_cost("gpt-4o-2024-08-06, input", "2"),
            openai_cost("gpt-4o-2024-08-06, output", "0.5"),
        ]
        admin.openai[D2]["completions"] = [
            openai_usage("gpt-4o-2024-08-06", input_tokens=800_000, output_tokens=50_000)
        ]
        admin.openai[D3] = {"costs": [], "completions": [], "embeddings": []}  # now empty
        assert service.fetch_and_store(ledger, settings, ["openai"], D1, TODAY, NOW, env) == {}
        rows, days = ledger.provider_usage("openai", D1, TODAY)
    finally:
        ledger.close()
    assert [r for r in rows if r.day == D1] == [r for r in first[0] if r.day == D1]
    d2 = {(r.model, r.kind): (r.quantity, r.cost_nusd) for r in rows if r.day == D2}
    assert d2 == {
        ("gpt-4o-2024-08-06", "uncached_input"): (800_000, 2_000_000_000),
        ("gpt-4o-2024-08-06", "output"): (50_000, 500_000_000),
    }
    assert [r for r in rows if r.day == D3] == []
    assert set(days) == {(D1, ""), (D2, ""), (D3, "")}


def test_429_with_retry_after_is_waited_out(
    db: str,
    tmp_path: Path,
    fake: tuple[FakeAdmin, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, url = fake
    _week(admin)
    admin.throttle = {"/v1/organization/costs": 2, "/v1/organizations/cost_report": 1}
    admin.retry_after = "0.2"
    _record(db, *_events())
    code, out, err = _run(
        capsys, monkeypatch, admin, "--db", db, "--config", _config(tmp_path, url),
        "--since", _since(), "--until", str(TODAY), "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    costs = [t for p, _, t in admin.requests if p == "/v1/organization/costs"]
    assert len(costs) == 4  # two refused, then two pages
    assert costs[1] - costs[0] >= 0.2 and costs[2] - costs[1] >= 0.2
    assert orjson.loads(out)["totals"]["openai"]["capture_ratio"] == 1.0


def test_401_names_the_key_variable_and_never_echoes_the_key(
    tmp_path: Path,
    fake: tuple[FakeAdmin, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, url = fake
    db = tmp_path / "l.db"
    open_ledger(str(db)).close()
    monkeypatch.setenv("TEST_OPENAI_ADMIN", "sk-wrong-secret-key")
    code = main(
        ["reconcile", "--db", str(db), "--config", _config(tmp_path, url), "--provider", "openai"]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert "set TEST_OPENAI_ADMIN to an admin key" in err and "401" in err
    assert "sk-wrong-secret-key" not in err + out and "sk-wron" not in err
    monkeypatch.delenv("TEST_OPENAI_ADMIN")
    code = main(
        ["reconcile", "--db", str(db), "--config", _config(tmp_path, url), "--provider", "openai"]
    )
    assert code == 2
    assert "no admin key: set TEST_OPENAI_ADMIN" in capsys.readouterr().err


def test_a_missing_ledger_is_named_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope" / "ledger.db"
    assert main(["reconcile", "--db", str(missing), "--no-fetch"]) == 2
    assert f"ledger {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_focus_csv_of_the_bill_and_of_the_daily_report(
    tmp_path: Path,
    fake: tuple[FakeAdmin, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, url = fake
    _week(admin)
    db = str(tmp_path / "f.db")
    _record(db, *_events())
    code, out, _ = _run(
        capsys, monkeypatch, admin, "--db", db, "--config", _config(tmp_path, url),
        "--provider", "anthropic", "--since", _since(), "--until", str(TODAY), "--format", "focus",
    )  # fmt: skip
    assert code == 0
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(out)))
    day = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(D3))
    assert [
        (r["SkuId"], r["x_TokenType"], r["BilledCost"], r["ConsumedQuantity"]) for r in rows
    ] == [
        ("claude-sonnet-4-20250514", "cache_write_5m", "0.375", "100000"),
        ("claude-sonnet-4-20250514", "cached_input", "0.15", "500000"),
        ("claude-sonnet-4-20250514", "output", "3", "200000"),
        ("claude-sonnet-4-20250514", "uncached_input", "3", "1000000"),
    ]
    assert {r["ChargePeriodStart"] for r in rows} == {day}
    assert {
        (r["ProviderName"], r["ConsumedUnit"], r["EffectiveCost"] == r["BilledCost"]) for r in rows
    } == {("Anthropic", "Tokens", True)}
    assert (
        main(
            [
                "report",
                "daily",
                "--db",
                db,
                "--since",
                _since(),
                "--until",
                str(TODAY),
                "--format",
                "focus",
            ]
        )
        == 0
    )
    daily = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    gpt = [r for r in daily if r["SkuId"] == "gpt-4o"]
    assert [(r["x_TokenType"], r["BilledCost"], r["ConsumedQuantity"]) for r in gpt] == [
        ("input", "2.25", "1000000"), ("output", "1", "100000"),
    ] * 3  # fmt: skip
    assert {r["x_Source"] for r in daily} == {"ledger"}


def test_scope_limits_the_provider_side(
    tmp_path: Path,
    fake: tuple[FakeAdmin, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin, url = fake
    admin.openai[D3] = {
        "costs": [
            openai_cost("gpt-4o, input", "2.5", project="proj_ours"),
            openai_cost("gpt-4o, input", "99", project="proj_other"),
        ],
        "completions": [
            openai_usage("gpt-4o", input_tokens=1_000_000, project_id="proj_ours"),
            openai_usage("gpt-4o", input_tokens=9_000_000, project_id="proj_other"),
        ],
        "embeddings": [],
    }
    db = str(tmp_path / "s.db")
    _record(db, {"provider": "openai", "model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 0, "timestamp": D3 + 60})  # fmt: skip
    cfg = Path(_config(tmp_path, url))
    cfg.write_text(
        cfg.read_text().replace(
            f'base_url: "{url}"}}\n    anthropic',
            f'base_url: "{url}", scope: {{projects: [proj_ours]}}}}\n    anthropic',
        )
    )
    code, out, _ = _run(
        capsys, monkeypatch, admin, "--db", db, "--config", str(cfg), "--provider", "openai",
        "--since", str(D3), "--until", str(TODAY), "--format", "json",
    )  # fmt: skip
    body = orjson.loads(out)
    assert code == 0
    assert body["scope"] == {"openai": "projects: proj_ours"}
    (r,) = body["rows"]
    assert r["billed_usd"] == 2.5 and r["capture_ratio"] == 1.0
    params = admin.requests[0][1]
    assert ("project_ids[]", "proj_ours") in params and ("group_by[]", "project_id") in params


def test_serve_fetches_in_the_background_and_serves_the_gauges(
    tmp_path: Path, fake: tuple[FakeAdmin, str]
) -> None:
    admin, url = fake
    _week(admin)
    db = str(tmp_path / "serve.db")
    _record(db, *_events())
    env = {"TEST_OPENAI_ADMIN": admin.openai_key, "TEST_ANTHROPIC_ADMIN": "sk-ant-wrong"}
    with server_process(db, ["--config", _config(tmp_path, url)], env) as server:
        deadline = time.monotonic() + 20
        samples = scrape(server.url)
        while time.monotonic() < deadline:
            samples = scrape(server.url)
            if ("ai_provider_fetch_success", frozenset({("provider", "anthropic")})) in samples:
                break
            time.sleep(0.1)

        def value(name: str, provider: str) -> float:
            return samples[(name, frozenset({("provider", provider)}))]

        assert value("ai_provider_billed_usd", "openai") == 3.25
        assert value("ai_spend_capture_ratio", "openai") == 1.0
        assert value("ai_spend_price_drift_models", "openai") == 0.0
        assert value("ai_provider_fetch_success", "openai") == 1.0
        assert abs(value("ai_provider_fetch_timestamp_seconds", "openai") - time.time()) < 60
        # The refused key: the fetch failed, nothing is known of yesterday's bill.
        assert value("ai_provider_fetch_success", "anthropic") == 0.0
        assert math.isnan(value("ai_spend_capture_ratio", "anthropic"))
        assert math.isnan(value("ai_provider_billed_usd", "anthropic"))
        # The dashboard's capture panel reads the stored bills as a report.
        r = httpx.get(f"{server.url}/api/reports/reconcile?days=3")
        assert r.status_code == 200
        body = r.json()
        assert [(x["day"], x["model"], x["capture_ratio"]) for x in body["rows"]] == [
            (time.strftime("%Y-%m-%d", time.gmtime(d)), "gpt-4o", 1.0) for d in (D1, D2, D3)
        ]
        assert body["not_fetched"] == {"anthropic": [time.strftime("%Y-%m-%d", time.gmtime(D3))]}
        bad = httpx.get(f"{server.url}/api/reports/reconcile?days=x")
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "days"
        server.proc.terminate()
        server.proc.wait(30)
        log = server.proc.stdout.read().decode() if server.proc.stdout else ""
    assert "sk-ant-wrong" not in log and admin.openai_key not in log
