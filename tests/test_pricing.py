from __future__ import annotations

import dataclasses
import logging
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import calc_price
from genai_prices import types as gp
from genai_prices.data_snapshot import get_snapshot

from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.events.parse import parse_event
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.core.pricing.rates import (
    Cost,
    PriceConfigError,
    genai_prices_version,
    genai_usage,
)
from ai_usage_exporter.core.pricing.render import describe_rates

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()


def event(provider: str, model: str, ts: float = NOW, **tokens: Any) -> UsageEvent:
    return UsageEvent(provider=provider, model=model, timestamp=ts, **tokens)


def reference(e: UsageEvent) -> gp.PriceCalculation:
    return calc_price(
        genai_usage(e),
        e.model,
        provider_id=e.provider,
        genai_request_timestamp=datetime.fromtimestamp(e.timestamp, UTC),
    )


def assert_matches(cost: Cost, e: UsageEvent) -> None:
    ref = reference(e)
    assert cost.source == "genai-prices"
    assert cost.input == pytest.approx(float(ref.input_price), abs=1e-9)
    assert cost.output == pytest.approx(float(ref.output_price), abs=1e-9)
    assert cost.total == pytest.approx(float(ref.total_price), abs=1e-9)
    assert cost.total == cost.input + cost.output


ANTHROPIC = parse_event(
    {
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "timestamp": NOW,
        "usage": {
            "input_tokens": 1200,
            "cache_read_input_tokens": 30_000,
            "cache_creation_input_tokens": 4000,
            "output_tokens": 800,
        },
    },
    now=NOW,
)[0]

PRICED = [
    event("openai", "gpt-4o", input_tokens=12_000, cached_input_tokens=8000, output_tokens=900),
    ANTHROPIC,
    event("openai", "o3-mini", input_tokens=3000, output_tokens=5000, reasoning_tokens=4200),
    event("groq", "llama-3.3-70b-versatile", input_tokens=5000, output_tokens=700),
    event(
        "deepseek", "deepseek-chat", input_tokens=9000, cached_input_tokens=6000, output_tokens=300
    ),
    event(
        "gemini", "gemini-2.5-flash", input_tokens=4000, audio_input_tokens=1500, output_tokens=99
    ),
    event(
        "vertex",
        "gemini-2.5-pro",
        input_tokens=250_000,
        cached_input_tokens=100_000,
        output_tokens=2000,
    ),
    event(
        "bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", input_tokens=100, output_tokens=10
    ),
    event("mistral", "mistral-large-latest", input_tokens=777, output_tokens=333),
    event(
        "openai",
        "gpt-4o-audio-preview",
        input_tokens=900,
        audio_input_tokens=600,
        output_tokens=800,
        audio_output_tokens=500,
    ),
]


@pytest.mark.parametrize("e", PRICED, ids=lambda e: f"{e.provider}/{e.model}")
def test_matches_calc_price(e: UsageEvent) -> None:
    assert_matches(PriceBook().price(e), e)


def test_anthropic_usage_shape_adds_cache_counts_to_input() -> None:
    assert ANTHROPIC.input_tokens == 35_200
    cost = PriceBook().price(ANTHROPIC)
    # 1200 x 3 + 30000 x 0.30 + 4000 x 3.75 per 1M, and 800 x 15 per 1M.
    assert cost.input == pytest.approx((1200 * 3 + 30_000 * 0.3 + 4000 * 3.75) / 1e6, abs=1e-12)
    assert cost.output == pytest.approx(800 * 15 / 1e6, abs=1e-12)


def test_gpt_4o_mini_exact() -> None:
    cost = PriceBook().price(event("openai", "gpt-4o-mini", input_tokens=1000, output_tokens=500))
    assert cost.input == pytest.approx(0.00015, abs=1e-12)
    assert cost.output == pytest.approx(0.0003, abs=1e-12)
    assert cost.total == pytest.approx(0.00045, abs=1e-12)
    assert cost.source == "genai-prices"


def test_azure_deployment_alias() -> None:
    book = PriceBook({"providers": {"azure": {"aliases": {"prod-gpt4o-*": "gpt-4o"}}}})
    e = event(
        "azure", "prod-gpt4o-eastus", input_tokens=5000, cached_input_tokens=1024, output_tokens=400
    )
    cost = book.price(e)
    ref = calc_price(genai_usage(e), "gpt-4o", provider_id="azure")
    assert cost.total == pytest.approx(float(ref.total_price), abs=1e-9)
    assert cost.input == pytest.approx(float(ref.input_price), abs=1e-9)
    assert cost.source == "genai-prices"
    rates = book.rates("azure", "prod-gpt4o-eastus")
    assert rates is not None
    assert rates.source.startswith("alias <config> (prod-gpt4o-* -> azure/gpt-4o); genai-prices")


def test_alias_to_other_provider() -> None:
    book = PriceBook(
        {
            "providers": {
                "azure": {"aliases": {"eu-mini": {"provider": "openai", "model": "gpt-4o-mini"}}}
            }
        }
    )
    cost = book.price(event("azure", "eu-mini", input_tokens=1000, output_tokens=500))
    assert cost.total == pytest.approx(0.00045, abs=1e-12)


def test_self_hosted_costs_nothing() -> None:
    book = PriceBook()
    cost = book.price(event("ollama", "llama3.1:8b", input_tokens=5000, output_tokens=500))
    assert cost == Cost(0.0, 0.0, 0.0, "self-hosted")
    rates = book.rates("vllm", "anything")
    assert rates is not None and rates.source == "self-hosted"
    custom = PriceBook(self_hosted=["gpu-box"])
    assert custom.price(event("gpu-box", "m", input_tokens=1)).source == "self-hosted"
    assert custom.price(event("ollama", "m", input_tokens=1)).source == "unpriced"


def test_self_hosted_from_file_section() -> None:
    book = PriceBook({"self_hosted": ["tgi"]})
    assert book.price(event("tgi", "m", input_tokens=1)).source == "self-hosted"
    assert book.price(event("ollama", "m", input_tokens=1)).source == "unpriced"


def test_unknown_model_is_unpriced_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook()
    e = event("openai", "no-such-model-xyz", input_tokens=100, output_tokens=5)
    with pytest.raises(LookupError):
        reference(e)
    with caplog.at_level(logging.WARNING, logger="ai_usage_exporter.pricing"):
        for _ in range(3):
            assert book.price(e) == Cost(0.0, 0.0, 0.0, "unpriced", "unknown_model")
        book.price(event("acme", "no-such-model-xyz", input_tokens=1))
        book.price(event("acme", "no-such-model-xyz", input_tokens=1))
    messages = [r.getMessage() for r in caplog.records if r.name == "ai_usage_exporter.pricing"]
    assert len(messages) == 2
    assert "'openai' model 'no-such-model-xyz'" in messages[0]
    assert "'acme' model 'no-such-model-xyz'" in messages[1]
    assert book.rates("openai", "no-such-model-xyz") is None


def test_no_warning_when_event_brings_its_cost(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ai_usage_exporter.pricing"):
        cost = PriceBook().price(event("acme", "m", input_tokens=10, cost_usd=0.5))
    assert cost == Cost(0.5, 0.0, 0.5, "event")
    assert caplog.records == []


# ---------------------------------------------------------------- tiers and time


@pytest.mark.parametrize(
    ("provider", "model", "threshold"),
    [("anthropic", "claude-sonnet-4-5", 200_000), ("google", "gemini-2.5-pro", 200_000)],
)
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_tier_threshold(provider: str, model: str, threshold: int, delta: int) -> None:
    e = event(
        provider,
        model,
        input_tokens=threshold + delta,
        cached_input_tokens=50_000,
        output_tokens=1000,
    )
    cost = PriceBook().price(e)
    assert_matches(cost, e)
    base = PriceBook().rates(provider, model)
    assert base is not None and base.tiers[0][0] == threshold
    expected_output_rate = base.tiers[0][1].output if delta > 0 else base.output
    assert cost.output == pytest.approx(1000 * expected_output_rate / 1e6, abs=1e-12)


def test_start_date_price_change() -> None:
    # genai-prices lowered o3's price from 2025-06-10 (UTC date).
    change = datetime(2025, 6, 10, tzinfo=UTC).timestamp()
    book = PriceBook()
    before = event("openai", "o3", ts=change - 1, input_tokens=10_000, output_tokens=1000)
    after = event("openai", "o3", ts=change, input_tokens=10_000, output_tokens=1000)
    cost_after, cost_before = book.price(after), book.price(before)
    assert_matches(cost_before, before)
    assert_matches(cost_after, after)
    assert cost_before.total > cost_after.total
    # Each period has its own cache entry; neither evicts the other.
    assert len(book._cache[("openai", "o3")]) == 2
    assert book.price(before) == cost_before


def test_time_of_day_price() -> None:
    # DeepSeek's deepseek-chat is cheaper outside 00:30-16:30 UTC.
    day = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    book = PriceBook()
    costs = []
    for seconds in (30 * 60 - 1, 30 * 60, 16.5 * 3600 - 1, 16.5 * 3600, 86_400 + 30 * 60 - 1):
        e = event(
            "deepseek",
            "deepseek-chat",
            ts=day + seconds,
            input_tokens=10_000,
            cached_input_tokens=4000,
            output_tokens=1000,
        )
        cost = book.price(e)
        assert_matches(cost, e)
        costs.append(cost.total)
    assert costs[0] < costs[1] == costs[2] > costs[3] == costs[4]


def test_every_genai_prices_model_matches_calc_price() -> None:
    """Our fixed formula equals genai-prices' unit decomposition for every model it lists."""
    book = PriceBook(self_hosted=[])
    checked = 0
    for provider in get_snapshot().providers:
        for model in provider.models:
            for n in (10_000, 300_000):
                # Every kind at once, the cache reads overlapping each modality.
                e = event(
                    provider.id,
                    model.id,
                    input_tokens=n,
                    cached_input_tokens=2000,
                    cache_write_tokens=1000,
                    audio_input_tokens=300,
                    image_input_tokens=500,
                    video_input_tokens=700,
                    cached_audio_input_tokens=120,
                    cached_image_input_tokens=230,
                    cached_video_input_tokens=340,
                    output_tokens=900,
                    reasoning_tokens=400,
                    audio_output_tokens=100,
                    image_output_tokens=60,
                    video_output_tokens=40,
                )
                try:
                    ref = calc_price(
                        genai_usage(e),
                        model.id,
                        provider_id=provider.id,
                        genai_request_timestamp=datetime.fromtimestamp(NOW, UTC),
                    )
                except LookupError:  # an id its own match rule does not accept
                    assert book.price(e).source == "unpriced"
                    continue
                if ref.model is not model:  # a later model in the list matches this id
                    continue
                cost = book.price(e)
                assert cost.total == pytest.approx(float(ref.total_price), abs=1e-9), model.id
                assert cost.output == pytest.approx(float(ref.output_price), abs=1e-9), model.id
                checked += 1
    assert checked > 2000


# ---------------------------------------------------------------- overrides


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_override_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        providers:
          openai:
            models:
              ft:gpt-4o-mini:acme:*:
                input: 0.30
                output: 1.20
                cached_input: 0.15
              gpt-4o-mini:
                input: 1
                output: 2
        """,
    )
    book = PriceBook.from_file(path)
    cost = book.price(
        event(
            "openai",
            "ft:gpt-4o-mini:acme:abc123",
            input_tokens=3000,
            cached_input_tokens=1000,
            output_tokens=1000,
            reasoning_tokens=500,
        )
    )
    assert cost.source == "override"
    assert cost.input == pytest.approx((2000 * 0.30 + 1000 * 0.15) / 1e6, abs=1e-12)
    assert cost.output == pytest.approx(1000 * 1.20 / 1e6, abs=1e-12)
    rates = book.rates("openai", "ft:gpt-4o-mini:acme:abc123")
    assert rates is not None
    assert rates.source == f"override {path}:4 (ft:gpt-4o-mini:acme:*)"
    assert book.price(event("openai", "gpt-4o-mini", input_tokens=10**6)).total == 1.0


def test_whole_config_file_with_prices_section(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        prices:
          providers:
            ollama:
              models:
                "*": {input: 0.01, output: 0.02}
        """,
    )
    cost = PriceBook.from_file(path).price(event("ollama", "llama3", input_tokens=10**6))
    assert cost == Cost(0.01, 0.0, 0.01, "override")


def test_precedence_event_then_override_then_genai_prices() -> None:
    overrides = {"providers": {"openai": {"models": {"gpt-4o-mini": {"input": 1.5, "output": 6}}}}}
    book, plain = PriceBook(overrides), PriceBook()
    e = event("openai", "gpt-4o-mini", input_tokens=1000, output_tokens=500)
    assert plain.price(e) == Cost(0.00015, 0.0003, 0.00045, "genai-prices")
    overridden = book.price(e)
    assert (overridden.input, overridden.output, overridden.source) == (0.0015, 0.003, "override")
    assert overridden.total == pytest.approx(0.0045, abs=1e-15)
    e.cost_usd = 0.009
    cost = book.price(e)
    # The given total, split as the price book would split it: 1/3 input, 2/3 output.
    assert cost.source == "event"
    assert cost.total == 0.009
    assert cost.input == pytest.approx(0.003, abs=1e-15)
    assert cost.input + cost.output == 0.009


def test_event_cost_with_unpriced_model_is_all_input() -> None:
    cost = PriceBook().price(event("ollama", "x", input_tokens=10, output_tokens=10, cost_usd=0.2))
    assert cost == Cost(0.2, 0.0, 0.2, "event")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            """
            providers:
              openai:
                models:
                  gpt-4o:
                    input: 1
                    ouput: 2
            """,
            6,
            "providers.openai.models.gpt-4o.ouput: unknown key 'ouput'",
        ),
        (
            """
            providers:
              openai:
                models:
                  gpt-4o:
                    input: 1
                    output: -2
            """,
            6,
            "must be a finite price >= 0, got -2",
        ),
        (
            """
            providers:
              openai:
                models:
                  gpt-4o:
                    input: 1e-3
                    output: 2
            """,
            5,
            "must be a number of USD per 1M tokens, got str '1e-3'",
        ),
        (
            """
            providers:
              openai:
                models:
                  gpt-4o:
                    input: true
                    output: 2
            """,
            5,
            "got bool True",
        ),
        (
            """
            providers:
              azure:
                modles: {}
            """,
            3,
            "unknown key 'modles'; expected one of models, aliases",
        ),
        (
            """
            self_hosted: [ollama]
            provider: {}
            """,
            2,
            "unknown key 'provider'",
        ),
        (
            """
            providers:
              azure:
                aliases:
                  prod-*: gpt-4oo
            """,
            4,
            "the target 'gpt-4oo' is not a known model of provider 'azure'",
        ),
        (
            """
            providers:
              openai:
                models:
                  gpt-4o:
                    input: 1
            """,
            4,
            "needs an output price",
        ),
        (
            """
            providers:
              openai:
                models:
                  gpt-4o: {input: 1, output: 2}
                  gpt-4o: {input: 1, output: 3}
            """,
            5,
            "duplicate key 'gpt-4o' (first on line 4)",
        ),
        (
            """
            providers:
              openai: [gpt-4o]
            """,
            2,
            "providers.openai: must be a mapping, got a list",
        ),
        (
            """
            providers:
              openai:
                models:
                  gpt-4o: {input: 1, output: 2
            """,
            5,
            "expected ',' or '}'",
        ),
    ],
)
def test_override_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PriceConfigError) as info:
        PriceBook.from_file(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert message in str(info.value)


def test_errors_in_plain_mapping_name_the_source() -> None:
    with pytest.raises(PriceConfigError, match=r"^config.yaml: providers.openai.models.x.input: "):
        PriceBook(
            {"providers": {"openai": {"models": {"x": {"input": -1, "output": 1}}}}},
            source="config.yaml",
        )


def test_missing_file() -> None:
    with pytest.raises(PriceConfigError, match="nope.yaml: cannot read the prices file"):
        PriceBook.from_file("nope.yaml")


# ---------------------------------------------------------------- describe


def test_describe_rates() -> None:
    book = PriceBook({"providers": {"azure": {"aliases": {"prod-gpt4o-*": "gpt-4o"}}}})
    text = describe_rates(book, "openai", ["gpt-4o-mini", "nope"])
    lines = text.splitlines()
    assert lines[0].startswith("USD per 1M tokens (search_1k: per 1,000 web searches); ")
    assert f"genai-prices {genai_prices_version};" in lines[0]
    assert lines[1].startswith("*: no rate of its own")
    # gpt-4o-mini prices no rarer kind but web searches: only that column is added.
    assert lines[2].split() == [
        "provider",
        "model",
        "input",
        "cached_in",
        "cache_wr",
        "output",
        "reasoning",
        "audio_in",
        "audio_out",
        "search_1k",
        "source",
    ]
    assert lines[3].split()[:10] == [
        "openai",
        "gpt-4o-mini",
        "0.15",
        "0.075",
        "0.15*",
        "0.6",
        "0.6*",
        "0.15*",
        "0.6*",
        "10",
    ]
    assert lines[3].endswith(f"genai-prices {genai_prices_version} (openai/gpt-4o-mini)")
    assert lines[4].split() == ["openai", "nope", *["-"] * 8, "unpriced"]
    listed = describe_rates(book, "azure", [])
    assert "prod-gpt4o-*" in listed and "alias <config>" in listed
    assert "\nazure     o1 " in listed
    tiered = describe_rates(book, None, ["gemini-2.5-pro"]).splitlines()
    assert tiered[3].split()[:3] == ["google", "gemini-2.5-pro", "1.25"]
    assert tiered[4].split()[:5] == [">", "200000", "input", "tokens", "2.5"]


def _table(text: str) -> list[dict[str, str]]:
    """The rows of a `describe_rates` table, cut at the header's column starts."""
    lines = text.splitlines()[2:]
    head = lines[0].split()
    starts = [lines[0].index(f" {h} ") + 1 if i else 0 for i, h in enumerate(head[:-1])]
    starts.append(lines[0].rindex(" source") + 1)
    bounds = [*starts, None]
    return [
        {h: line[bounds[i] : bounds[i + 1]].strip() for i, h in enumerate(head)}
        for line in lines[1:]
    ]


def test_describe_rates_shows_every_kind_a_price_list_gives() -> None:
    rows = _table(
        describe_rates(
            PriceBook(),
            None,
            ["claude-sonnet-4-5", "gemini-2.5-flash", "gemini-2.5-flash-image-preview"],
        )
    )
    cols = list(rows[0])
    assert cols == [
        "provider",
        "model",
        "input",
        "cached_in",
        "cache_wr",
        "output",
        "reasoning",
        "audio_in",
        "audio_out",
        "cache_wr_1h",
        "image_out",
        "cached_audio",
        "search_1k",
        "source",
    ]
    sonnet, sonnet_tier, flash, image = rows
    # Anthropic: 1-hour writes at 2x input, 5-minute at 1.25x; $10 per 1,000 searches.
    assert [sonnet[c] for c in cols[2:13]] == [
        "3", "0.3", "3.75", "15", "15*", "3*", "15*", "6", "15*", "0.3*", "10",
    ]  # fmt: skip
    assert [sonnet_tier[c] for c in cols[2:13]] == [
        "6", "0.6", "7.5", "22.5", "22.5*", "6*", "22.5*", "12", "22.5*", "0.6*", "10",
    ]  # fmt: skip
    # Gemini 2.5 Flash: audio input and its cache read priced apart.
    assert [flash[c] for c in ("audio_in", "cached_audio", "search_1k")] == ["1", "0.1", "35"]
    # The image model's image output is 12x its text output.
    assert [image[c] for c in ("output", "image_out")] == ["2.5", "30"]


def test_describe_rates_overrides_mark_what_they_leave_out() -> None:
    book = PriceBook(
        {
            "providers": {
                "acme": {
                    "models": {
                        "vid-*": {
                            "input": 1,
                            "output": 4,
                            "cache_write_1h": 2.5,
                            "image_input": 1.5,
                            "video_input": 3,
                            "video_output": 40,
                            "cached_video_input": 0.3,
                            "cached_image_input": 0.2,
                            "web_search": 25,
                        }
                    }
                }
            }
        }
    )
    rows = _table(describe_rates(book, "acme", ["vid-1"]))
    assert rows == [
        {
            "provider": "acme",
            "model": "vid-1",
            "input": "1",
            "cached_in": "1*",
            "cache_wr": "1*",
            "output": "4",
            "reasoning": "4*",
            "audio_in": "1*",
            "audio_out": "4*",
            "cache_wr_1h": "2.5",
            "image_in": "1.5",
            "video_in": "3",
            "video_out": "40",
            "cached_image": "0.2",
            "cached_video": "0.3",
            "search_1k": "25",
            "source": "override <config> (vid-*)",
        }
    ]


def test_per_request_fee_counts_as_input() -> None:
    e = event("perplexity", "sonar", input_tokens=1000, output_tokens=100)
    cost = PriceBook().price(e)
    ref = reference(e)
    assert cost.total == pytest.approx(float(ref.total_price), abs=1e-12)
    assert cost.input == pytest.approx(float(ref.input_price) + 0.012, abs=1e-12)
    assert ref.total_price - ref.input_price - ref.output_price == Decimal("0.012")


def test_costs_are_ordinary_frozen_dataclasses() -> None:
    cost = PriceBook().price(event("openai", "gpt-4o-mini", input_tokens=1000, output_tokens=500))
    assert cost == Cost(cost.input, cost.output, cost.total, "genai-prices")
    assert hash(cost) == hash(Cost(cost.input, cost.output, cost.total, "genai-prices"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.total = 1.0  # type: ignore[misc]


def test_concurrent_pricing_agrees() -> None:
    book = PriceBook()
    day = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    events = [
        event("deepseek", "deepseek-chat", ts=day + h * 3600, input_tokens=1000, output_tokens=100)
        for h in range(48)
    ]
    expected = [PriceBook().price(e) for e in events]

    def work(_: int) -> list[Cost]:
        return [book.price(e) for e in events]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(8)))
    assert all(r == expected for r in results)


# ---------------------------------------------------------------- cache reads by modality


def test_gemini_cached_audio_is_priced_at_the_cached_audio_rate() -> None:
    # gemini-2.5-flash per 1M: input 0.30, cached 0.03, audio 1.00, cached audio 0.10,
    # output 2.50. 10,000 input of which 4,000 audio; 6,000 cached of which 3,000 audio.
    e = event(
        "google",
        "gemini-2.5-flash",
        input_tokens=10_000,
        cached_input_tokens=6000,
        audio_input_tokens=4000,
        cached_audio_input_tokens=3000,
        output_tokens=100,
    )
    cost = PriceBook().price(e)
    # uncached text 3,000 x 0.30 + cached text 3,000 x 0.03 + uncached audio 1,000 x 1.00
    # + cached audio 3,000 x 0.10, per 1M.
    assert cost.input == pytest.approx((900 + 90 + 1000 + 300) / 1e6, abs=1e-12)
    assert cost.output == pytest.approx(250 / 1e6, abs=1e-12)
    assert cost.reason == ""
    assert_matches(cost, e)


def test_cached_image_on_a_model_without_image_rates_is_a_plain_cache_read() -> None:
    # The recorded gemini-2.5-flash body of test_corpus: 373 input (258 image), 204
    # cached (141 image). No image rate: 169 uncached at 0.30, 204 cached at 0.03.
    e = event(
        "google",
        "gemini-2.5-flash",
        input_tokens=373,
        cached_input_tokens=204,
        image_input_tokens=258,
        cached_image_input_tokens=141,
    )
    cost = PriceBook().price(e)
    assert cost.input == pytest.approx((169 * 0.30 + 204 * 0.03) / 1e6, abs=1e-15)
    assert_matches(cost, e)


@pytest.mark.parametrize(
    ("model", "kinds"),
    [
        # cached audio $0.40 and cached image $0.50 against audio $32 and image $5.
        ("gpt-realtime", {"cached_audio_input_tokens": 700, "cached_image_input_tokens": 90}),
        # cached image $2.50 against image $10.
        ("gpt-image-1", {"cached_image_input_tokens": 300}),
    ],
)
def test_openai_cached_audio_and_image_rates(model: str, kinds: dict[str, int]) -> None:
    e = event(
        "openai",
        model,
        input_tokens=5000,
        cached_input_tokens=1500,
        audio_input_tokens=2000 if "cached_audio_input_tokens" in kinds else 0,
        image_input_tokens=400,
        output_tokens=300,
        **kinds,
    )
    cost = PriceBook().price(e)
    assert_matches(cost, e)
    zeroed: dict[str, Any] = dict.fromkeys(kinds, 0)
    without = PriceBook().price(dataclasses.replace(e, **zeroed))
    assert without.total > cost.total  # the cache discount is applied to those tokens


def test_video_is_priced_apart_only_where_the_model_prices_it() -> None:
    # gemini-live-2.5-flash: input 0.50, video 3.00; gemini-2.5-flash: no video rate.
    live = event("google", "gemini-live-2.5-flash", input_tokens=1000, video_input_tokens=800)
    assert PriceBook().price(live).input == pytest.approx((200 * 0.5 + 800 * 3.0) / 1e6)
    assert_matches(PriceBook().price(live), live)
    flash = event("google", "gemini-2.5-flash", input_tokens=1000, video_input_tokens=800)
    assert PriceBook().price(flash).input == pytest.approx(1000 * 0.30 / 1e6)
    assert PriceBook().price(flash).reason == ""
    # Omni: video output 17.50 against 9.00 for the rest of the output.
    omni = event("google", "gemini-omni-flash-preview", output_tokens=1000, video_output_tokens=600)
    assert PriceBook().price(omni).output == pytest.approx((400 * 9.0 + 600 * 17.5) / 1e6)
    assert_matches(PriceBook().price(omni), omni)


def test_override_cached_modality_rates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        providers:
          acme:
            models:
              joined: {input: 1.0, output: 2.0, cached_input: 0.1, audio_input: 4.0,
                       cached_audio_input: 0.4, video_input: 3.0, cached_video_input: 0.3}
              unjoined: {input: 1.0, output: 2.0, cached_input: 0.1, audio_input: 4.0}
              audio_only: {input: 1.0, output: 2.0, audio_input: 4.0}
              cache_only: {input: 1.0, output: 2.0, cached_input: 0.1}
        """,
    )
    book = PriceBook.from_file(path)

    def price(model: str, **extra: int) -> Cost:
        return book.price(
            event("acme", model, input_tokens=1000, cached_input_tokens=600,
                  audio_input_tokens=500, cached_audio_input_tokens=400, **extra)
        )  # fmt: skip

    # 300 text uncached, 200 text cached, 100 audio uncached, 400 audio cached.
    joined = price("joined", video_input_tokens=0)
    assert joined.input == pytest.approx((300 * 1.0 + 200 * 0.1 + 100 * 4.0 + 400 * 0.4) / 1e6)
    assert joined.reason == ""
    # Both parents priced apart and no join: a cache read, said to be approximate.
    unjoined = price("unjoined")
    assert unjoined.input == pytest.approx((300 * 1.0 + 600 * 0.1 + 100 * 4.0) / 1e6)
    assert unjoined.reason == "unpriced_token_type"
    # One parent priced apart: its rate, exactly (genai-prices' leaf rule).
    assert price("audio_only").input == pytest.approx((500 * 1.0 + 500 * 4.0) / 1e6)
    assert price("audio_only").reason == ""
    assert price("cache_only").input == pytest.approx((400 * 1.0 + 600 * 0.1) / 1e6)
    # (Flagged for the audio input, which has no rate of its own there.)
    assert price("cache_only").reason == "unpriced_token_type"
    video = book.price(
        event("acme", "joined", input_tokens=1000, cached_input_tokens=600,
              video_input_tokens=500, cached_video_input_tokens=400)
    )  # fmt: skip
    assert video.input == pytest.approx((300 * 1.0 + 200 * 0.1 + 100 * 3.0 + 400 * 0.3) / 1e6)
