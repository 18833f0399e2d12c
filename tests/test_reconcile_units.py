"""The pure parts of reconcile: amounts, counts, buckets, line items, pages, the
comparison's flags, and the config section. Page shapes are the providers' documented
examples (sources in _fake_admin.py), with the variations seen in recorded responses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from _fake_admin import FakeAdmin

from _server import serve_app
from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.reconcile import ProviderSettings
from ai_usage_exporter.config.settings import load_file
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.ledger.provider_usage import ProviderUsage
from ai_usage_exporter.reconcile import anthropic, openai
from ai_usage_exporter.reconcile._parse import (
    ShapeError,
    Tally,
    count,
    epoch,
    money,
    nanodollars,
    page,
    whole_day,
)
from ai_usage_exporter.reconcile.client import retry_after
from ai_usage_exporter.reconcile.compare import RECORDED_VALUES, Recorded, compare
from ai_usage_exporter.reconcile.service import fetch

DAY = 86_400
D = 1_754_006_400  # 2025-08-01T00:00:00Z


def _json(text: str) -> Any:
    # As the client parses bodies: numbers as Decimal, never float.
    return json.loads(text, parse_float=Decimal)


@pytest.mark.parametrize(
    ("value", "nusd"),
    [
        (Decimal("0.06"), 60_000_000),
        ("1.50", 1_500_000_000),
        ("1.5E-7", 150),
        ("1.5e-7", 150),
        (" 2.25 ", 2_250_000_000),
        (Decimal("1E+1"), 10_000_000_000),
        (3, 3_000_000_000),
        ("0.0000000005", 0),  # half a nanodollar rounds to even
        ("0.0000000015", 2),
        ("-0.25", -250_000_000),  # a credit
    ],
)
def test_amounts_become_whole_nanodollars(value: Any, nusd: int) -> None:
    assert nanodollars(money(value, "x")) == nusd


@pytest.mark.parametrize("value", [True, None, "NaN", "Infinity", "abc", "", [1]])
def test_bad_amounts_are_refused_naming_where(value: Any) -> None:
    with pytest.raises(ShapeError, match="costs bucket 3: expected"):
        money(value, "costs bucket 3")


def test_anthropic_amounts_are_cents() -> None:
    # The cost report's own example: "123.45" in USD represents $1.2345.
    assert nanodollars(money("123.45", "x") / 100) == 1_234_500_000


def test_counts() -> None:
    assert count(None, "x") == 0
    assert count(12, "x") == 12
    assert count("12", "x") == 12
    assert count(Decimal("1E+3"), "x") == 1000
    for bad in (-1, Decimal("1.5"), True, "x"):
        with pytest.raises(ShapeError):
            count(bad, "x")


def test_times_and_whole_days() -> None:
    assert epoch(D, "x") == D
    assert epoch("2025-08-01T00:00:00Z", "x") == D
    assert epoch("2025-08-01T00:00:00+00:00", "x") == D
    assert whole_day(D, D + DAY) == D
    assert whole_day(D, D + 3600) is None  # the partial last bucket
    assert whole_day(D + 60, D + DAY + 60) is None  # not aligned to a UTC day
    with pytest.raises(ShapeError):
        epoch("yesterday", "x")


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("gpt-4o-2024-08-06, input", ("gpt-4o-2024-08-06", "uncached_input")),
        ("gpt-4o-mini-2024-07-18, cached input", ("gpt-4o-mini-2024-07-18", "cached_input")),
        ("gpt-4.1-2025-04-14, output", ("gpt-4.1-2025-04-14", "output")),
        ("priority | gpt-5.6-sol, output, long context", ("gpt-5.6-sol", "output")),
        ("batch | gpt-4o-2024-08-06, input", ("gpt-4o-2024-08-06", "uncached_input")),
        ("gpt-audio-mini-2025-12-15 audio, input", ("gpt-audio-mini-2025-12-15", "audio_input")),
        ("gpt-image-1 image, output", ("gpt-image-1", "image_output")),
        ("gpt-4o, cache writes", ("gpt-4o", "cache_write_5m")),
        ("ft-gpt-4o-2024-08-06, training", ("ft-gpt-4o-2024-08-06", "other")),
        ("web search tool calls", ("", "web_search")),
        ("Vector storage", ("", "other")),
        (None, ("", "other")),
    ],
)
def test_openai_line_items(item: str | None, expected: tuple[str, str]) -> None:
    assert openai.line_item(item) == expected


def test_openai_costs_page_documented_example() -> None:
    # The API reference's example response (GET /v1/organization/costs?limit=1),
    # and a partial bucket ending mid-day that must be left alone.
    body = _json(
        """{"object": "page", "data": [
          {"object": "bucket", "start_time": 1730419200, "end_time": 1730505600,
           "results": [{"object": "organization.costs.result",
                        "amount": {"value": 0.06, "currency": "usd"},
                        "line_item": null, "project_id": null}]},
          {"object": "bucket", "start_time": 1730505600, "end_time": 1730530000, "results": []}
        ], "has_more": false, "next_page": null}"""
    )
    p = openai.costs_page(body)
    assert p.next_page is None
    tally = Tally("openai")
    openai.add_costs(tally, p, None, {""}, range(1730419200, 1730592000, DAY))
    assert tally.cost == {(1730419200, "", "", "other"): 60_000_000}
    assert tally.cost_days == {1730419200}


def test_a_page_claiming_more_without_a_cursor_is_refused() -> None:
    with pytest.raises(ShapeError, match="has_more is true but next_page is None"):
        page({"data": [], "has_more": True, "next_page": None}, "x", "start_time", "end_time")


def test_anthropic_usage_documented_example() -> None:
    # The example response of GET /v1/organizations/usage_report/messages.
    body = _json(
        """{"data": [{"ending_at": "2025-08-02T00:00:00Z", "starting_at": "2025-08-01T00:00:00Z",
           "results": [{"api_key_id": "apikey_01Rj2N8SVvo6BePZj99NhmiT",
             "cache_creation": {"ephemeral_1h_input_tokens": 1000, "ephemeral_5m_input_tokens": 500},
             "cache_read_input_tokens": 200, "context_window": "0-200k",
             "model": "claude-sonnet-4-20250514", "output_tokens": 500,
             "server_tool_use": {"web_search_requests": 10}, "service_tier": "standard",
             "uncached_input_tokens": 1500, "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"}]}],
           "has_more": true, "next_page": "2019-12-27T18:11:19.117Z"}"""
    )
    p = anthropic.report_page(body)
    assert p.next_page == "2019-12-27T18:11:19.117Z"
    tally = Tally("anthropic")
    anthropic.add_usage(tally, p, None, {""}, range(D, D + DAY, DAY))
    m = "claude-sonnet-4-20250514"
    assert tally.quantity == {
        (D, "", m, "uncached_input"): 1500,
        (D, "", m, "cached_input"): 200,
        (D, "", m, "cache_write_5m"): 500,
        (D, "", m, "cache_write_1h"): 1000,
        (D, "", m, "output"): 500,
        (D, "", m, "web_search"): 10,
    }
    # Grouped by workspace, the same row belongs to that workspace's scope only.
    tally = Tally("anthropic")
    anthropic.add_usage(tally, p, "workspaces", {"workspace:other"}, range(D, D + DAY, DAY))
    assert tally.quantity == {}


def test_anthropic_cost_kinds() -> None:
    assert anthropic.cost_kind({"cost_type": "tokens", "token_type": "cache_creation.ephemeral_1h_input_tokens"}) == "cache_write_1h"  # fmt: skip
    assert anthropic.cost_kind({"cost_type": "web_search", "token_type": None}) == "web_search"
    assert anthropic.cost_kind({"cost_type": "code_execution"}) == "other"


def test_retry_after() -> None:
    assert retry_after("5", 0.0) == 5.0
    assert retry_after("0.05", 0.0) == 0.05
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after("soon", 0.0) is None
    assert retry_after(None, 0.0) is None


@pytest.fixture
def fake() -> Iterator[tuple[FakeAdmin, str]]:
    admin = FakeAdmin()
    with serve_app(admin.app()) as url:
        yield admin, url


def test_429_without_retry_after_backs_off_exponentially(fake: tuple[FakeAdmin, str]) -> None:
    admin, url = fake
    admin.throttle = {"/v1/organization/costs": 2}
    admin.retry_after = ""
    waits: list[float] = []
    got = fetch(
        ProviderSettings("openai", "K", url), D, D + DAY, D + 3 * DAY, {"K": admin.openai_key},
        sleep=waits.append,
    )  # fmt: skip
    assert waits == [2.0, 4.0]
    assert got.days == {D: True}  # an empty day is a fact too: nothing billed


def test_a_day_within_hours_of_its_end_is_not_final(fake: tuple[FakeAdmin, str]) -> None:
    admin, url = fake
    got = fetch(ProviderSettings("openai", "K", url), D, D + DAY, D + DAY + 3600, {"K": admin.openai_key})  # fmt: skip
    assert got.days == {D: False}


def _rec(model: str, inp: int, out: int, nusd: int) -> Recorded:
    values = dict.fromkeys(RECORDED_VALUES, 0) | {
        "requests": 1, "input_tokens": inp, "output_tokens": out, "cost_total_nusd": nusd,
    }  # fmt: skip
    return Recorded(D, "openai", model, [values[c] for c in RECORDED_VALUES])


def test_compare_flags_over_recording_no_model_charges_and_unfetched_days() -> None:
    book = PriceBook()
    billed = [
        ProviderUsage("openai", D, "", "gpt-4o-2024-08-06", "uncached_input", 1000, 2_500_000),
        ProviderUsage("openai", D, "", "", "web_search", 3, 30_000_000),
    ]
    rows, missing = compare(
        "openai",
        billed,
        {(D, ""): False},
        [""],
        [_rec("gpt-4o", 2000, 0, 5_000_000), Recorded(D + DAY, "openai", "gpt-4o", [0] * 6)],
        book.model_identity,
        book.rates,
    )
    assert missing == [D + DAY]
    by_model = {r["model"]: r for r in rows}
    assert by_model["gpt-4o"]["flags"] == ["over_recorded", "not_final"]
    assert by_model["gpt-4o"]["capture_ratio"] == 2.0
    assert by_model["(no model)"]["flags"] == ["not_final"]
    assert by_model["(no model)"]["billed_usd"] == 0.03


def test_config_section(tmp_path: Any) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "reconcile:\n  interval: 30m\n  providers:\n    openai: {admin_key_env: OA_KEY, "
        "scope: {projects: [proj_a, proj_b]}}\n"
    )
    rc = load_file(str(cfg))["reconcile"]
    assert rc.interval == 1800.0
    assert rc.provider("openai") == ProviderSettings(
        "openai", "OA_KEY", "https://api.openai.com", "projects", ("proj_a", "proj_b")
    )
    assert rc.provider("anthropic").admin_key_env == "ANTHROPIC_ADMIN_KEY"
    cfg.write_text("reconcile:\n  providers:\n    openai: {admin_key_env: sk-proj-abc123}\n")
    with pytest.raises(ConfigError, match="must name an environment variable") as err:
        load_file(str(cfg))
    assert "sk-proj-abc123" not in str(err.value)
    cfg.write_text("reconcile:\n  providers:\n    anthropic: {scope: {api_keys: [k]}}\n")
    with pytest.raises(ConfigError, match="unknown key 'api_keys'; known: workspaces"):
        load_file(str(cfg))
    cfg.write_text("reconcile:\n  providers:\n    mistral: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'mistral'"):
        load_file(str(cfg))
