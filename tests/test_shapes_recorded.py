"""Recorded provider usage, normalised and priced: unit level and over HTTP to a real server.

Each case in fixtures/recorded_usage.json names where it was recorded or documented.
Costs are checked against genai-prices pricing the usage that genai-prices' *own*
extractor reads from the same body (independent of our mapping), or against the cost
the provider reported.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import httpx
import pytest
from genai_prices import data_snapshot

from _server import server_process
from ai_usage_exporter.core.events.parse import parse_event
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.core.shapes import USAGE_FIELDS

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "recorded_usage.json").read_text()
)["cases"]
NOW = 1_790_000_000.0  # 2026-09-21, a fixed point for dated prices
SOURCES = ("usage", "usageMetadata", "response")


def _event(case: dict[str, Any]) -> dict[str, Any]:
    event = {k: case[k] for k in ("provider", "model", *SOURCES) if k in case}
    event["idempotency_key"] = case["name"]
    return event


def _body(case: dict[str, Any]) -> dict[str, Any]:
    """The whole body genai-prices' extractor reads: a response, or the object around a usage."""
    if "response" in case:
        return dict(case["response"])
    key = "usage" if "usage" in case else "usageMetadata"
    return {key: case[key], "model": case.get("model")}


def _reference_cost(case: dict[str, Any], provider_id: str, flavor: str) -> float:
    """genai-prices on its own reading of the body: extract_usage, then calc_price."""
    provider = next(p for p in data_snapshot.get_snapshot().providers if p.id == provider_id)
    _, usage = provider.extract_usage(_body(case), api_flavor=flavor)
    model = case.get("model") or case["expect"]["model"]
    from datetime import UTC, datetime

    price = genai_prices.calc_price(
        usage,
        model,
        provider_id=provider_id,
        genai_request_timestamp=datetime.fromtimestamp(NOW, UTC),
    )
    return float(price.total_price)


def _expected_counts(case: dict[str, Any]) -> dict[str, int]:
    return {**dict.fromkeys(USAGE_FIELDS, 0), **case["expect"]["counts"]}


def _expected_total(case: dict[str, Any]) -> float:
    expect = case["expect"]
    if "cost_usd" in expect:
        return float(expect["cost_usd"])
    if expect["cost_source"] == "self-hosted":
        return 0.0
    provider_id, flavor = expect["genai_flavor"]
    return _reference_cost(case, provider_id, flavor)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_recorded_usage_is_normalised_and_priced(case: dict[str, Any]) -> None:
    expect = case["expect"]
    (event,) = parse_event(_event(case), now=NOW)
    assert {f: getattr(event, f) for f in USAGE_FIELDS} == _expected_counts(case)
    assert event.provider == expect.get("provider", case.get("provider"))
    assert event.model == expect.get("model", case.get("model"))
    assert event.service_tier == expect.get("service_tier")
    if "duration_ms" in expect:
        assert event.duration_ms == pytest.approx(expect["duration_ms"], abs=1e-9)
    cost = PriceBook().price(event)
    assert cost.source == expect["cost_source"]
    assert cost.reason == expect.get("reason", "")
    assert cost.total == pytest.approx(_expected_total(case), abs=1e-9)
    assert cost.input + cost.output == pytest.approx(cost.total, abs=1e-12)


def test_reference_prices_are_not_trivially_zero() -> None:
    # A reference that is 0 everywhere would let a pricing bug through unseen.
    priced = [c for c in CASES if c["expect"]["cost_source"] == "genai-prices"]
    assert len(priced) >= 10
    assert all(_expected_total(c) > 0 for c in priced)


def test_recorded_usage_posted_over_http_lands_in_the_ledger(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    with server_process(db) as server:
        r = httpx.post(
            f"{server.url}/api/usage",
            json=[{**_event(c), "timestamp": NOW} for c in CASES],
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == len(CASES)
        view = httpx.get(f"{server.url}/api/metrics", timeout=10).json()
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = {r["idempotency_key"]: dict(r) for r in conn.execute("SELECT * FROM events")}
    conn.close()
    assert set(rows) == {c["name"] for c in CASES}
    for case in CASES:
        row, expect = rows[case["name"]], case["expect"]
        assert {f: row[f] for f in USAGE_FIELDS} == _expected_counts(case), case["name"]
        assert row["cost_source"] == expect["cost_source"], case["name"]
        assert row["cost_reason"] == expect.get("reason", ""), case["name"]
        assert row["service_tier"] == expect.get("service_tier"), case["name"]
        assert row["cost_total"] == pytest.approx(_expected_total(case), abs=1e-9), case["name"]
    reasons = {(u["model"], u["reason"]) for u in view["unpriced_models"]}
    assert ("gemini-2.5-flash", "unpriced_token_type") in reasons
    assert ("claude-haiku-4-5-20251001", "unknown_tier") in reasons
    want = sum(Decimal(str(_expected_total(c))) for c in CASES)
    assert view["totals"]["cost_usd"]["total"] == pytest.approx(float(want), abs=1e-8)
