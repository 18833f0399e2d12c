"""Time `Recorder.record()` per event against prometheus_client and the OpenTelemetry SDK.

Run from the repository root: ``python3 -m bench.record`` (``--smoke`` for a quick check).

Every contender does the same metric updates for the same realistic events (five label
values, three token types, a duration, priced by genai-prices), in this process:

- ``record(**fields)``: the usual call; validates the fields, prices, redacts, queues.
- ``record(UsageEvent)``: the same with the event object already built (no validation).
- prometheus_client: ``.labels(...).inc()`` on a fresh CollectorRegistry: the requests
  counter, four token counters (input, output, cached_input, total), three cost
  counters, the level counter and a duration histogram ``observe``. Costs are priced
  before timing starts, so this anchor does no pricing at all.
- OpenTelemetry SDK: the same updates with attribute dicts, on a MeterProvider with an
  InMemoryMetricReader.

Two figures per contender: the caller-side p50 of per-call times (each call timed on
its own) and throughput over an untimed loop. For the Recorder the throughput includes
``flush()``: every event committed to SQLite (synchronous=full) and counted. The
targets (record() <= 0.75x of prometheus_client, >= 5x faster than OpenTelemetry) are
judged on the caller-side p50; the end-to-end ratios are printed next to them.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.metrics import BUCKETS, HELP
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.recorder.recorder import Recorder

from ._harness import machine, p50, parse_args, verdict

try:
    import opentelemetry.sdk.metrics  # noqa: F401

    HAVE_OTEL = True
except ImportError:  # the bench extra is not installed
    HAVE_OTEL = False

TARGET_VS_PROMETHEUS = 0.75  # record() p50 at most this fraction of prometheus_client's
TARGET_VS_OTEL = 5.0  # record() at least this many times faster than the OTel SDK

SERVICES = ("checkout", "search", "support-bot", "summariser", "ingest")
MODELS = (("openai", "gpt-4o-mini", 8), ("openai", "gpt-4o", 2))
OPERATIONS = (("chat", 9), ("embeddings", 1))

Fields = dict[str, Any]


def make_fields(n: int, seed: int = 11) -> list[Fields]:
    """Keyword fields of `n` realistic events, the same for every contender."""
    rng = random.Random(seed)
    models = [(p, m) for p, m, w in MODELS for _ in range(w)]
    ops = [o for o, w in OPERATIONS for _ in range(w)]
    out: list[Fields] = []
    for _ in range(n):
        provider, model = rng.choice(models)
        input_tokens = rng.randint(200, 6000)
        error = rng.random() < 0.02
        out.append(
            {
                "service": rng.choice(SERVICES),
                "provider": provider,
                "model": model,
                "operation": rng.choice(ops),
                "status": "error" if error else "ok",
                "level": "error" if error else "info",
                "input_tokens": input_tokens,
                "cached_input_tokens": rng.randint(0, input_tokens // 2),
                "output_tokens": rng.randint(1, 1500),
                "duration_ms": round(rng.uniform(150.0, 9000.0), 1),
            }
        )
    return out


def make_events(fields: Sequence[Fields]) -> list[UsageEvent]:
    now = time.time()
    return [UsageEvent(timestamp=now, **f) for f in fields]


# ---------------------------------------------------------------- contenders


class PrometheusClient:
    """The hand-written instrumentation a service would otherwise carry."""

    def __init__(self) -> None:
        reg = CollectorRegistry()
        self.requests = Counter(
            "ai_requests",
            HELP["ai_requests"],
            ("service", "provider", "model", "operation", "status"),
            registry=reg,
        )
        series = ("type", "service", "provider", "model")
        self.tokens = Counter("ai_tokens", HELP["ai_tokens"], series, registry=reg)
        self.cost = Counter("ai_cost", HELP["ai_cost"], series, registry=reg)
        self.levels = Counter(
            "ai_requests_by_level", HELP["ai_requests_by_level"], ("level",), registry=reg
        )
        self.duration = Histogram(
            "ai_request_duration_seconds",
            HELP["ai_request_duration_seconds"],
            ("service", "provider", "model"),
            buckets=BUCKETS,
            registry=reg,
        )
        self.registry = reg

    def update(self, f: Fields, cost: tuple[float, float, float]) -> None:
        svc, prov, model = f["service"], f["provider"], f["model"]
        self.requests.labels(svc, prov, model, f["operation"], f["status"]).inc()
        inp, out = f["input_tokens"], f["output_tokens"]
        tokens = self.tokens
        tokens.labels("input", svc, prov, model).inc(inp)
        tokens.labels("output", svc, prov, model).inc(out)
        tokens.labels("cached_input", svc, prov, model).inc(f["cached_input_tokens"])
        tokens.labels("total", svc, prov, model).inc(inp + out)
        c = self.cost
        c.labels("input", svc, prov, model).inc(cost[0])
        c.labels("output", svc, prov, model).inc(cost[1])
        c.labels("total", svc, prov, model).inc(cost[2])
        self.levels.labels(f["level"]).inc()
        self.duration.labels(svc, prov, model).observe(f["duration_ms"] / 1000.0)


class OpenTelemetrySDK:
    """The same updates through the OpenTelemetry metrics SDK."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        meter = self.provider.get_meter("bench.record")
        self.requests = meter.create_counter("ai_requests")
        self.tokens = meter.create_counter("ai_tokens")
        self.cost = meter.create_counter("ai_cost")
        self.levels = meter.create_counter("ai_requests_by_level")
        self.duration = meter.create_histogram(
            "ai_request_duration_seconds",
            unit="s",
            explicit_bucket_boundaries_advisory=list(BUCKETS),
        )

    def update(self, f: Fields, cost: tuple[float, float, float]) -> None:
        svc, prov, model = f["service"], f["provider"], f["model"]
        self.requests.add(
            1,
            {
                "service": svc,
                "provider": prov,
                "model": model,
                "operation": f["operation"],
                "status": f["status"],
            },
        )
        inp, out = f["input_tokens"], f["output_tokens"]
        add = self.tokens.add
        add(inp, {"type": "input", "service": svc, "provider": prov, "model": model})
        add(out, {"type": "output", "service": svc, "provider": prov, "model": model})
        add(
            f["cached_input_tokens"],
            {"type": "cached_input", "service": svc, "provider": prov, "model": model},
        )
        add(inp + out, {"type": "total", "service": svc, "provider": prov, "model": model})
        add = self.cost.add
        add(cost[0], {"type": "input", "service": svc, "provider": prov, "model": model})
        add(cost[1], {"type": "output", "service": svc, "provider": prov, "model": model})
        add(cost[2], {"type": "total", "service": svc, "provider": prov, "model": model})
        self.levels.add(1, {"level": f["level"]})
        self.duration.record(
            f["duration_ms"] / 1000.0, {"service": svc, "provider": prov, "model": model}
        )

    def close(self) -> None:
        self.provider.shutdown()


# ---------------------------------------------------------------- timing


def per_call_ns(call: Callable[[int], None], n: int) -> list[int]:
    clock = time.perf_counter_ns
    times = [0] * n
    for i in range(n):
        t0 = clock()
        call(i)
        times[i] = clock() - t0
    return times


def loop_seconds(call: Callable[[int], None], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        call(i)
    return time.perf_counter() - t0


class Result:
    def __init__(self, name: str) -> None:
        self.name = name
        self.p50s: list[float] = []  # ns, one per round
        self.rates: list[float] = []  # events/s, one per round

    @property
    def p50_ns(self) -> float:
        return statistics.median(self.p50s)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


def one_round(
    recorder: Recorder,
    fields: list[Fields],
    costs: list[tuple[float, float, float]],
    results: dict[str, Result],
) -> None:
    """Each contender once over the same events: per-call times, then throughput."""
    n = len(fields)
    # Recorder, keyword fields: the caller side, then end-to-end with flush().
    res = results["record_kwargs"]
    record = recorder.record
    res.p50s.append(p50(per_call_ns(lambda i: record(**fields[i]), n)))
    recorder.flush()
    t0 = time.perf_counter()
    for f in fields:
        record(**f)
    recorder.flush()
    res.rates.append(n / (time.perf_counter() - t0))

    # Recorder, UsageEvent objects built beforehand (outside the timing).
    res = results["record_event"]
    events = make_events(fields)
    res.p50s.append(p50(per_call_ns(lambda i: record(events[i]), n)))
    recorder.flush()
    events = make_events(fields)
    t0 = time.perf_counter()
    for e in events:
        record(e)
    recorder.flush()
    res.rates.append(n / (time.perf_counter() - t0))

    # (a) prometheus_client on a fresh registry.
    res = results["prometheus_client"]
    prom = PrometheusClient()
    res.p50s.append(p50(per_call_ns(lambda i: prom.update(fields[i], costs[i]), n)))
    prom = PrometheusClient()
    res.rates.append(n / loop_seconds(lambda i: prom.update(fields[i], costs[i]), n))

    # (b) OpenTelemetry SDK.
    if "opentelemetry" not in results:
        return
    res = results["opentelemetry"]
    otel = OpenTelemetrySDK()
    res.p50s.append(p50(per_call_ns(lambda i: otel.update(fields[i], costs[i]), n)))
    otel.close()
    otel = OpenTelemetrySDK()
    res.rates.append(n / loop_seconds(lambda i: otel.update(fields[i], costs[i]), n))
    otel.close()


def run(n: int, rounds: int, db_dir: Path) -> dict[str, Result]:
    fields = make_fields(n)
    book = PriceBook()
    costs = []
    for ev in make_events(fields):
        c = book.price(ev)
        costs.append((c.input, c.output, c.total))

    names = ["record_kwargs", "record_event", "prometheus_client"]
    if HAVE_OTEL:
        names.append("opentelemetry")
    results = {name: Result(name) for name in names}
    recorder = Recorder(str(db_dir / "record.db"), prices=book)
    try:
        for i in range(min(n, 2000)):  # warm-up: price cache, series, label strings
            recorder.record(**fields[i])
        recorder.flush()
        for _ in range(rounds):
            one_round(recorder, fields, costs, results)
        committed = recorder.ledger.count_events()
    finally:
        recorder.close()
    expected = min(n, 2000) + rounds * 4 * n
    if committed != expected:
        raise SystemExit(f"ledger holds {committed} events, expected {expected}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    n, rounds = (2_000, 1) if args.smoke else (30_000, 3)
    print(machine())
    print(f"events per round: {n}, rounds: {rounds} (figures are medians over rounds)")
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        results = run(n, rounds, Path(tmp))

    prom = results["prometheus_client"]
    otel = results.get("opentelemetry")
    print()
    print(
        f"{'contender':<22}{'p50 ns/call':>12}{'x prom p50':>12}{'events/s':>13}{'x prom rate':>13}"
    )
    for r in results.values():
        print(
            f"{r.name:<22}{r.p50_ns:>12.0f}{r.p50_ns / prom.p50_ns:>12.2f}"
            f"{r.rate:>13.0f}{r.rate / prom.rate:>13.2f}"
        )
    print("(Recorder events/s include flush(): committed to SQLite and counted)")
    print()
    kw = results["record_kwargs"]
    ev = results["record_event"]
    print(
        f"record(UsageEvent) vs record(**fields): p50 {ev.p50_ns / kw.p50_ns:.2f}x, "
        f"throughput {ev.rate / kw.rate:.2f}x"
    )
    print("targets, judged on the caller-side p50 of record(**fields):")
    ratio = kw.p50_ns / prom.p50_ns
    print(
        f"  record() <= {TARGET_VS_PROMETHEUS}x prometheus_client: {ratio:.2f}x "
        f"{verdict(ratio <= TARGET_VS_PROMETHEUS)}"
        f" (end-to-end throughput: record() time per event = {prom.rate / kw.rate:.2f}x)"
    )
    if otel is None:
        print("  OpenTelemetry SDK not installed (pip install -e '.[bench]'): not measured")
        return 0
    speedup = otel.p50_ns / kw.p50_ns
    print(
        f"  record() >= {TARGET_VS_OTEL}x faster than OpenTelemetry: {speedup:.2f}x "
        f"{verdict(speedup >= TARGET_VS_OTEL)} (end-to-end: {kw.rate / otel.rate:.2f}x)"
    )
    print(
        f"  with a built UsageEvent: {ev.p50_ns / prom.p50_ns:.2f}x prometheus_client, "
        f"{otel.p50_ns / ev.p50_ns:.2f}x faster than OpenTelemetry"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
