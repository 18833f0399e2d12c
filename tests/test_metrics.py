from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from _server import exposition_samples
from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.metrics import OTHER, LabelFolder, MetricsState, UsageCollector
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.core.rollup import aggregate


def _state_with(events: list[tuple[UsageEvent, Cost]], **kwargs: object) -> MetricsState:
    state = MetricsState(build_info={"version": "1.2.3", "genai_prices_version": "0.2.3"}, **kwargs)  # type: ignore[arg-type]
    state.apply(aggregate(events).items())
    return state


def _random_events(n: int, seed: int = 7) -> list[tuple[UsageEvent, Cost]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        inp = rng.randint(0, 5000)
        out_tokens = rng.randint(0, 2000)
        cin, cout = inp * 1e-7, out_tokens * 4e-7
        e = UsageEvent(
            provider=rng.choice(["openai", "anthropic"]),
            model=rng.choice(["m1", 'we"ird\\mo\ndel', "🤖"]),
            service=rng.choice(["chat", "rag"]),
            operation=rng.choice(["chat", "embedding"]),
            status=rng.choice(["ok", "ok", "error"]),
            level=rng.choice(["info", "warn", "error"]),
            input_tokens=inp,
            output_tokens=out_tokens,
            cached_input_tokens=inp // 3,
            reasoning_tokens=out_tokens // 4,
            duration_ms=rng.choice([None, rng.uniform(0, 700_000)]),
            ttft_ms=rng.choice([None, rng.uniform(0, 3000)]),
            tenant=f"t{i % 3}",
            web_search_requests=i % 4,
        )
        out.append((e, Cost(cin, cout, cin + cout, rng.choice(["genai-prices", "unpriced"]))))
    return out


@pytest.mark.parametrize("extra", [(), ("tenant",)])
def test_fast_renderer_gives_exactly_the_samples_of_generate_latest(extra: tuple[str, ...]) -> None:
    state = _state_with(_random_events(500), extra_labels=extra)
    state.count_exporter(accepted=500, duplicate=3)
    state.count_rejected("invalid", 2)
    registry = CollectorRegistry()
    registry.register(UsageCollector(state))
    fast = exposition_samples(state.render_text())
    reference = exposition_samples(generate_latest(registry).decode())
    assert fast == reference
    assert len(fast) > 400


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    events = [
        (UsageEvent(provider="p", model="m", duration_ms=ms), Cost(0, 0, 0, "event"))
        for ms in (10.0, 10.0001, 600_000.0, 600_001.0)
    ]
    s = exposition_samples(_state_with(events).render_text())
    labels = {("service", "default"), ("provider", "p"), ("model", "m")}

    def bucket(le: str) -> float:
        return s[("ai_request_duration_seconds_bucket", frozenset({*labels, ("le", le)}))]

    assert bucket("0.01") == 1.0  # 10 ms lies on the first bound
    assert bucket("0.025") == 2.0
    assert bucket("600.0") == 3.0
    assert bucket("+Inf") == 4.0
    assert s[("ai_request_duration_seconds_count", frozenset(labels))] == 4.0
    assert s[("ai_request_duration_seconds_sum", frozenset(labels))] == pytest.approx(1200.0200001)
    assert s[("ai_average_duration_ms", frozenset({("service", "default")}))] == pytest.approx(
        300_005.0000250
    )


def test_tokens_total_is_input_plus_output_and_subkinds_are_kept() -> None:
    e = UsageEvent(
        provider="p", model="m", input_tokens=100, output_tokens=40, cached_input_tokens=60,
        cache_write_tokens=10, reasoning_tokens=30, audio_input_tokens=5, audio_output_tokens=7,
    )  # fmt: skip
    s = exposition_samples(_state_with([(e, Cost(1.0, 2.0, 3.0, "event"))]).render_text())
    base = {("service", "default"), ("provider", "p"), ("model", "m")}
    got = {t: s[("ai_tokens_total", frozenset({*base, ("type", t)}))] for t in (
        "input", "output", "total", "cached_input", "cache_write", "reasoning", "audio_input", "audio_output")}  # fmt: skip
    assert got == {
        "input": 100.0, "output": 40.0, "total": 140.0, "cached_input": 60.0,
        "cache_write": 10.0, "reasoning": 30.0, "audio_input": 5.0, "audio_output": 7.0,
    }  # fmt: skip
    assert s[("ai_cost_total", frozenset({*base, ("type", "total")}))] == 3.0


def test_server_tool_requests_by_type_with_extra_labels_and_folding() -> None:
    def call(model: str, tenant: str, searches: int) -> tuple[UsageEvent, Cost]:
        e = UsageEvent(
            provider="anthropic", model=model, tenant=tenant, web_search_requests=searches
        )
        return e, Cost(0, 0, 0, "event")

    events = [call("a", "t1", 2), call("a", "t1", 3), call("a", "t2", 0), call("b", "t1", 4)]
    events += [call("c", "t1", 5), call("d", "t2", 7)]  # folded: cap 2 models
    state = _state_with(events, extra_labels=("tenant",), label_caps={"model": 2})
    s = exposition_samples(state.render_text())
    got = {
        (dict(k)["model"], dict(k)["tenant"], dict(k)["type"]): v
        for (name, k), v in s.items()
        if name == "ai_server_tool_requests_total"
    }
    assert got == {
        ("a", "t1", "web_search"): 5.0,
        ("a", "t2", "web_search"): 0.0,
        ("b", "t1", "web_search"): 4.0,
        (OTHER, "t1", "web_search"): 5.0,
        (OTHER, "t2", "web_search"): 7.0,
    }
    text = state.render_text()
    assert "# TYPE ai_server_tool_requests_total counter\n" in text
    assert (
        'ai_server_tool_requests_total{type="web_search",service="default",'
        'provider="anthropic",model="a",tenant="t1"} 5.0\n'
    ) in text


def test_label_folding_keeps_every_increment() -> None:
    events = [
        (UsageEvent(provider="p", model=f"model-{i}", input_tokens=1), Cost(0, 0, 0, "event"))
        for i in range(20)
    ]
    state = _state_with(events, label_caps={"model": 5})
    s = exposition_samples(state.render_text())
    models = {dict(k[1])["model"]: v for k, v in s.items() if k[0] == "ai_requests_total"}
    assert len(models) == 6
    assert models[OTHER] == 15.0
    assert sum(models.values()) == 20.0
    assert s[("ai_exporter_label_values_folded_total", frozenset({("label", "model")}))] == 15.0


def test_label_folder_rejects_a_zero_cap() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        LabelFolder("model", 0)
    with pytest.raises(ValueError, match="unknown label 'colour'"):
        MetricsState(label_caps={"colour": 3})
    with pytest.raises(ValueError, match="cannot be a Prometheus label"):
        MetricsState(extra_labels=["user"])


def test_other_collectors_in_the_registry_are_kept(tmp_path: object) -> None:
    registry = CollectorRegistry()
    mine = Counter("app_things", "Things the app did.", registry=registry)
    mine.inc(3)
    state = _state_with([])
    collector = UsageCollector(state)
    registry.register(collector)
    with collector.skipping():
        others = exposition_samples(generate_latest(registry).decode())
    assert ("app_things_total", frozenset()) in others
    assert not any(name.startswith("ai_") for name, _ in others)


def test_build_info() -> None:
    s = exposition_samples(_state_with([]).render_text())
    assert (
        s[
            (
                "ai_exporter_build_info",
                frozenset({("version", "1.2.3"), ("genai_prices_version", "0.2.3")}),
            )
        ]
        == 1.0
    )


def test_cache_reads_by_modality_and_video_are_token_types() -> None:
    e = UsageEvent(
        provider="google", model="m", input_tokens=1000, output_tokens=50,
        cached_input_tokens=700, audio_input_tokens=300, image_input_tokens=200,
        video_input_tokens=400, cached_audio_input_tokens=250, cached_image_input_tokens=90,
        cached_video_input_tokens=300, video_output_tokens=20,
    )  # fmt: skip
    s = exposition_samples(_state_with([(e, Cost(1.0, 2.0, 3.0, "event"))]).render_text())
    base = {("service", "default"), ("provider", "google"), ("model", "m")}
    kinds = ("cached_audio_input", "cached_image_input", "cached_video_input", "video_input",
             "video_output")  # fmt: skip
    got = {t: s[("ai_tokens_total", frozenset({*base, ("type", t)}))] for t in kinds}
    assert got == {
        "cached_audio_input": 250.0, "cached_image_input": 90.0, "cached_video_input": 300.0,
        "video_input": 400.0, "video_output": 20.0,
    }  # fmt: skip
