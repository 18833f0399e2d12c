"""The new token kinds, provider-reported cost, service tiers and the unpriced reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from genai_prices import calc_price
from prometheus_client.parser import text_string_to_metric_families

from ai_usage_exporter import Recorder
from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.core.pricing.rates import Cost, genai_usage

NOW = 1_790_000_000.0


def event(provider: str, model: str, **kw: Any) -> UsageEvent:
    return UsageEvent(provider=provider, model=model, timestamp=NOW, **kw)


def reference(e: UsageEvent) -> float:
    price = calc_price(
        genai_usage(e),
        e.model,
        provider_id=e.provider,
        genai_request_timestamp=datetime.fromtimestamp(NOW, UTC),
    )
    return float(price.total_price)


def test_one_hour_cache_writes_are_priced_at_the_one_hour_rate() -> None:
    e = event("anthropic", "claude-sonnet-4-5", input_tokens=10_000, output_tokens=100,
              cache_write_tokens=6000, cache_write_1h_tokens=4000)  # fmt: skip
    cost = PriceBook().price(e)
    assert (cost.source, cost.reason) == ("genai-prices", "")
    assert cost.total == pytest.approx(reference(e), abs=1e-12)
    # $3 input, $3.75 five-minute write, $6 one-hour write, $15 output per 1M.
    want = (4000 * 3 + 2000 * 3.75 + 4000 * 6 + 100 * 15) / 1e6
    assert cost.total == pytest.approx(want, abs=1e-12)


def test_web_searches_are_billed_per_request() -> None:
    base = event("anthropic", "claude-sonnet-4-5", input_tokens=1000, output_tokens=100)
    searched = event("anthropic", "claude-sonnet-4-5", input_tokens=1000, output_tokens=100,
                     web_search_requests=3)  # fmt: skip
    book = PriceBook()
    extra = book.price(searched).total - book.price(base).total
    assert extra == pytest.approx(3 * 10 / 1000, abs=1e-12)  # $10 per 1,000 searches
    assert book.price(searched).input - book.price(base).input == pytest.approx(0.03, abs=1e-12)
    assert book.price(searched).total == pytest.approx(reference(searched), abs=1e-12)


def test_image_output_at_its_own_rate_and_unpriced_without_one() -> None:
    book = PriceBook()
    priced = event("google", "gemini-2.5-flash-image", input_tokens=10, output_tokens=1300,
                   image_output_tokens=1290)  # fmt: skip
    cost = book.price(priced)
    assert cost.reason == ""
    assert cost.total == pytest.approx(reference(priced), abs=1e-12)
    assert cost.total == pytest.approx((10 * 0.3 + 10 * 2.5 + 1290 * 30) / 1e6, abs=1e-12)
    plain = event("google", "gemini-2.5-flash", input_tokens=10, output_tokens=1300,
                  image_output_tokens=1290)  # fmt: skip
    cost = book.price(plain)
    assert (cost.source, cost.reason) == ("genai-prices", "unpriced_token_type")
    assert cost.total == pytest.approx(reference(plain), abs=1e-12)


def test_audio_without_an_audio_rate_is_approximate() -> None:
    e = event("openai", "gpt-4o-audio-preview", input_tokens=900, output_tokens=600,
              audio_input_tokens=700, audio_output_tokens=450)  # fmt: skip
    cost = PriceBook().price(e)
    assert cost.reason == "unpriced_token_type"
    assert cost.total == pytest.approx(reference(e), abs=1e-12)
    with_rate = event("google", "gemini-2.5-flash", input_tokens=900, output_tokens=10,
                      audio_input_tokens=700)  # fmt: skip
    assert PriceBook().price(with_rate).reason == ""


def test_a_tier_without_a_price_is_standard_rate_and_says_so() -> None:
    book = PriceBook()
    standard = book.price(event("openai", "gpt-4o-mini", input_tokens=1000, output_tokens=100))
    for tier in ("default", "standard", "on_demand"):
        same = book.price(event("openai", "gpt-4o-mini", input_tokens=1000, output_tokens=100,
                                service_tier=tier))  # fmt: skip
        assert same == standard
    flex = book.price(event("openai", "gpt-4o-mini", input_tokens=1000, output_tokens=100,
                            service_tier="flex"))  # fmt: skip
    assert (flex.source, flex.reason, flex.total) == (
        "genai-prices",
        "unknown_tier",
        standard.total,
    )


def test_a_tier_override_prices_that_tier_only() -> None:
    book = PriceBook({"providers": {"openai": {"models": {
        "gpt-4o-mini@flex": {"input": 0.075, "output": 0.30},
        "gpt-4o*": {"input": 1.0, "output": 1.0},
    }}}})  # fmt: skip
    flex = book.price(event("openai", "gpt-4o-mini", input_tokens=1_000_000, output_tokens=0,
                            service_tier="flex"))  # fmt: skip
    assert (flex.source, flex.reason) == ("override", "")
    assert flex.total == pytest.approx(0.075)
    # A glob without a tier is not that tier's price: batch falls back, approximately.
    batch = book.price(event("openai", "gpt-4o-mini", input_tokens=1_000_000, output_tokens=0,
                             service_tier="batch"))  # fmt: skip
    assert (batch.source, batch.reason) == ("override", "unknown_tier")
    assert batch.total == pytest.approx(1.0)


def test_vertex_model_names_with_an_at_sign_are_not_tiers() -> None:
    book = PriceBook(
        {"providers": {"vertex": {"models": {"claude-x@20250101": {"input": 1, "output": 2}}}}}
    )
    cost = book.price(event("vertex", "claude-x@20250101", input_tokens=1_000_000, output_tokens=0))
    assert (cost.source, cost.reason) == ("override", "")
    assert cost.total == pytest.approx(1.0)


def test_cost_precedence_event_then_provider_then_override() -> None:
    book = PriceBook({"providers": {"openrouter": {"models": {"*": {"input": 1, "output": 1}}}}})
    e = event("openrouter", "any/model", input_tokens=1000, output_tokens=1000)
    assert book.price(e).source == "override"
    e.provider_cost_usd = 0.5
    cost = book.price(e)
    assert (cost.source, cost.total, cost.input, cost.output) == ("provider", 0.5, 0.25, 0.25)
    e.cost_usd = 0.7
    assert (book.price(e).source, book.price(e).total) == ("event", 0.7)
    unknown = event("somewhere", "unknown-model", input_tokens=10, provider_cost_usd=0.01)
    assert book.price(unknown) == Cost(0.01, 0.0, 0.01, "provider")


def test_reasons_reach_the_metrics_and_the_json_view(tmp_path: Any) -> None:
    recorder = Recorder(str(tmp_path / "l.db"))
    try:
        recorder.record(
            provider="openai", model="gpt-4o-mini", input_tokens=10, service_tier="flex"
        )
        recorder.record(provider="google", model="gemini-2.5-flash", input_tokens=10,
                        output_tokens=20, image_output_tokens=15)  # fmt: skip
        recorder.record(provider="nowhere", model="no-model", input_tokens=10)
        recorder.record(provider="openai", model="gpt-4o-mini", input_tokens=10)
        recorder.flush()
        text = recorder.exposition().decode()
        summary = recorder.view()
    finally:
        recorder.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    unpriced = {k[1]: v for k, v in samples.items() if k[0] == "ai_unpriced_requests_total"}
    assert unpriced == {
        (("model", "gpt-4o-mini"), ("provider", "openai"), ("reason", "unknown_tier")): 1.0,
        (
            ("model", "gemini-2.5-flash"),
            ("provider", "google"),
            ("reason", "unpriced_token_type"),
        ): 1.0,
        (("model", "no-model"), ("provider", "nowhere"), ("reason", "unknown_model")): 1.0,
    }
    image = [v for (n, labels), v in samples.items()
             if n == "ai_tokens_total" and ("type", "image_output") in labels]  # fmt: skip
    assert sorted(image) == [0.0, 0.0, 15.0]
    assert {(u["model"], u["reason"]) for u in summary["unpriced_models"]} == {
        ("gpt-4o-mini", "unknown_tier"),
        ("gemini-2.5-flash", "unpriced_token_type"),
        ("no-model", "unknown_model"),
    }
