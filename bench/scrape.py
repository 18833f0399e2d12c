"""Time rendering the exposition against prometheus_client's `generate_latest`.

Run from the repository root: ``python3 -m bench.scrape`` (``--smoke`` for a quick check).

A *series* is one sample line of the exposition, as Prometheus counts them. Each label
set (service, provider, model) with one request label set contributes 31 series: one
request counter, eight token counters, one server-tool counter, three cost counters and a duration histogram of
16 buckets, count and sum; the label sets are made so that the total is about 100,
1,000 and 10,000 (the exact count is printed). Four renderers write the same samples:

- ``MetricsState.render_text()``, the fast path, from cached label strings;
- ``Recorder.exposition()``, what ``/metrics`` serves (the above, encoded, plus
  whatever else shares the registry);
- ``generate_latest`` over a registry of prometheus_client Counter, Gauge and Histogram
  objects holding the same samples (the anchor; ``_created`` series disabled so the
  samples are the same);
- ``generate_latest`` over the registry holding our ``UsageCollector``.

Each output is parsed with ``prometheus_client.parser`` and compared sample by sample.
Target: ``render_text()`` at 10,000 series at most 0.5x of the anchor.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.metrics import (
    BUCKETS,
    COST_TYPES,
    HELP,
    LEVELS,
    SERVER_TOOL_TYPES,
    TOKEN_TYPES,
    MetricsState,
)
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.core.rollup import NANO, aggregate
from ai_usage_exporter.core.shapes import COUNT_FIELDS, TOKEN_FIELDS
from ai_usage_exporter.recorder.recorder import Recorder

from ._harness import machine, p50, parse_args, verdict

TARGET = 0.5  # render_text() time at 10,000 series over generate_latest's
SERIES_PER_LABEL_SET = 31
SERVICES = 50

Priced = tuple[UsageEvent, Cost]
Sample = tuple[str, tuple[tuple[str, str], ...], float]


def make_priced(label_sets: int, seed: int = 5) -> list[Priced]:
    """One event per (service, provider, model) label set."""
    rng = random.Random(seed)
    now = time.time()
    out: list[Priced] = []
    for i in range(label_sets):
        inp, cached, outp = rng.randint(100, 9000), rng.randint(0, 50), rng.randint(1, 2000)
        e = UsageEvent(
            provider="openai",
            model=f"model-{i // SERVICES}",
            service=f"service-{i % SERVICES}",
            input_tokens=inp,
            cached_input_tokens=cached,
            output_tokens=outp,
            web_search_requests=i % 3,
            duration_ms=float(rng.randint(20, 20_000)),
            timestamp=now,
        )
        ci, co = inp * 0.15e-6, outp * 0.6e-6
        out.append((e, Cost(ci, co, ci + co, "genai-prices")))
    return out


def prometheus_registry(priced: Sequence[Priced], state: MetricsState) -> CollectorRegistry:
    """The same samples as `state`, held by plain prometheus_client metric objects."""
    reg = CollectorRegistry()
    series = ("service", "provider", "model")
    requests = Counter("ai_requests", HELP["ai_requests"], state.request_labelnames, registry=reg)
    tokens = Counter("ai_tokens", HELP["ai_tokens"], ("type", *series), registry=reg)
    tools = Counter(
        "ai_server_tool_requests", HELP["ai_server_tool_requests"], ("type", *series), registry=reg
    )
    cost = Counter("ai_cost", HELP["ai_cost"], ("type", *series), registry=reg)
    levels = Counter("ai_requests_by_level", HELP["ai_requests_by_level"], ("level",), registry=reg)
    avg = Gauge(
        "ai_average_duration_ms", HELP["ai_average_duration_ms"], ("service",), registry=reg
    )
    duration = Histogram(
        "ai_request_duration_seconds",
        HELP["ai_request_duration_seconds"],
        series,
        buckets=BUCKETS,
        registry=reg,
    )
    Histogram(
        "ai_time_to_first_token_seconds",
        HELP["ai_time_to_first_token_seconds"],
        series,
        buckets=BUCKETS,
        registry=reg,
    )
    Counter(
        "ai_unpriced_requests", HELP["ai_unpriced_requests"], ("provider", "model"), registry=reg
    )
    Counter("ai_exporter_events_accepted", HELP["ai_exporter_events_accepted"], registry=reg)
    Counter("ai_exporter_events_duplicate", HELP["ai_exporter_events_duplicate"], registry=reg)
    Counter(
        "ai_exporter_events_rejected",
        HELP["ai_exporter_events_rejected"],
        ("reason",),
        registry=reg,
    )
    folded = Counter(
        "ai_exporter_label_values_folded",
        HELP["ai_exporter_label_values_folded"],
        ("label",),
        registry=reg,
    )
    for name in state.folders:
        folded.labels(name)
    info_names = sorted(state.build_info)
    Gauge(
        "ai_exporter_build_info", HELP["ai_exporter_build_info"], info_names, registry=reg
    ).labels(*(state.build_info[n] for n in info_names)).set(1)
    for level in LEVELS:
        levels.labels(level)
    per_service: dict[str, list[int]] = {}
    for e, c in priced:
        key = (e.service, e.provider, e.model)
        requests.labels(*key, e.operation, e.status).inc()
        counts = (
            e.input_tokens,
            e.output_tokens,
            e.input_tokens + e.output_tokens,
            *(getattr(e, f) for f in TOKEN_FIELDS[2:]),
        )
        for t, v in zip(TOKEN_TYPES, counts, strict=True):
            tokens.labels(t, *key).inc(v)
        for t, f in zip(SERVER_TOOL_TYPES, COUNT_FIELDS, strict=True):
            tools.labels(t, *key).inc(getattr(e, f))
        # The exporter sums money in whole nanodollars and time in microseconds.
        ci, co = round(c.input * NANO), round(c.output * NANO)
        for t, n in zip(COST_TYPES, (ci, co, ci + co), strict=True):
            cost.labels(t, *key).inc(n / NANO)
        levels.labels(e.level).inc()
        assert e.duration_ms is not None
        us = round(e.duration_ms * 1000)
        duration.labels(*key).observe(us / 1e6)
        acc = per_service.setdefault(e.service, [0, 0])
        acc[0] += us
        acc[1] += 1
    for service, (total_us, count) in per_service.items():
        avg.labels(service).set(total_us / count / 1000)
    return reg


def samples(text: str) -> set[Sample]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def time_call(fn: Callable[[], object], min_seconds: float, min_reps: int) -> float:
    """Median seconds per call over at least `min_reps` calls and `min_seconds`."""
    fn()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return p50(times)


def measure(target_series: int, db_dir: Path, min_seconds: float) -> tuple[int, bool, float]:
    """Print one size's figures; return (series, outputs agree, render_text ratio)."""
    label_sets = max(1, round(target_series / SERIES_PER_LABEL_SET))
    priced = make_priced(label_sets)
    deltas = aggregate(priced)
    recorder = Recorder(str(db_dir / f"scrape-{target_series}.db"))
    try:
        state = recorder.state
        state.apply(deltas.items())
        prom = prometheus_registry(priced, state)

        text = state.render_text()
        ours = samples(text)
        anchor = samples(generate_latest(prom).decode())
        via_collector = samples(generate_latest(recorder.registry).decode())
        via_exposition = samples(recorder.exposition().decode())
        agree = ours == anchor == via_collector == via_exposition
        series = len(ours)

        reps = 3 if min_seconds < 0.1 else 10
        anchor_s = time_call(lambda: generate_latest(prom), min_seconds, reps)
        rows = (
            ("MetricsState.render_text()", time_call(state.render_text, min_seconds, reps)),
            ("Recorder.exposition()", time_call(recorder.exposition, min_seconds, reps)),
            (
                "generate_latest(our collector)",
                time_call(lambda: generate_latest(recorder.registry), min_seconds, reps),
            ),
            ("generate_latest(prometheus_client)", anchor_s),
        )
    finally:
        recorder.close()
    print(f"\n{series} series ({label_sets} label sets), {len(text)} bytes")
    for name, seconds in rows:
        print(f"  {name:<36}{seconds * 1e3:>10.3f} ms{seconds / anchor_s:>8.2f}x")
    if agree:
        print(
            f"  parsed with prometheus_client.parser: all four outputs hold the same {series} samples"
        )
    else:
        print(
            f"  parsed with prometheus_client.parser: outputs DIFFER "
            f"(ours - anchor: {sorted(ours - anchor)[:3]}, anchor - ours: {sorted(anchor - ours)[:3]})"
        )
    return series, agree, rows[0][1] / anchor_s


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    # The anchor would otherwise add a `_created` sample per child, which we do not export.
    prometheus_client.disable_created_metrics()
    sizes, min_seconds = ((100, 1_000), 0.01) if args.smoke else ((100, 1_000, 10_000), 1.0)
    print(machine())
    print("times are medians per call; ratios are to generate_latest(prometheus_client)")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        for size in sizes:
            results.append(measure(size, Path(tmp), min_seconds))
    series, agree, ratio = results[-1]
    print(
        f"\ntarget: render_text() <= {TARGET}x generate_latest at {series} series: "
        f"{ratio:.2f}x {verdict(ratio <= TARGET)}"
    )
    if not all(a for _, a, _ in results):
        print("error: the outputs do not hold the same samples", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
