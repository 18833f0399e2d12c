"""Feed one million events, each with a distinct model name, through `MetricsState.apply`.

Run from the repository root: ``python3 -m bench.cardinality`` (``--smoke`` for a quick
check). Prints resident memory at checkpoints: with the default label caps it should
stop growing once the model cap is reached, because later names fold into
``__other__``. It checks the counts are exact and asserts nothing about memory.
"""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Iterator, Sequence

from ai_usage_exporter.core.metrics import DEFAULT_LABEL_CAPS, OTHER, MetricsState
from ai_usage_exporter.core.rollup import KEY_FIELDS, REQUESTS, TOKEN_COLUMNS, VALUE_COLUMNS

from ._harness import machine, parse_args

BATCH = 10_000

Delta = tuple[tuple[str, ...], list[int]]


def rss_mib() -> float:
    """Current resident set size in MiB, from /proc/self/status (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def deltas(start: int, stop: int) -> Iterator[Delta]:
    """One event per delta, each under a model name never seen before."""
    blanks = ("",) * (len(KEY_FIELDS) - 6)
    for i in range(start, stop):
        key = ("svc", "openai", f"model-{i:07d}", "chat", "ok", "info", *blanks)
        vec = [0] * len(VALUE_COLUMNS)
        vec[REQUESTS] = 1
        vec[TOKEN_COLUMNS[0]] = 100
        vec[TOKEN_COLUMNS[1]] = 10
        yield key, vec


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    n = 20_000 if args.smoke else 1_000_000
    checkpoints = {n // 10 * k for k in range(1, 11)}
    cap = DEFAULT_LABEL_CAPS["model"]
    print(machine())
    print(f"events: {n:,}, distinct model names: {n:,}, model label cap: {cap}")

    gc.collect()
    state = MetricsState(build_info={"version": "bench"})
    before = rss_mib()
    print(f"RSS before: {before:.1f} MiB (peak so far {peak_rss_mib():.1f} MiB)")
    t0 = time.perf_counter()
    done = 0
    while done < n:
        stop = min(done + BATCH, n)
        state.apply(deltas(done, stop))
        done = stop
        if done in checkpoints:
            gc.collect()
            print(
                f"  after {done:>9,} events: RSS {rss_mib():7.1f} MiB, "
                f"series {len(state.series):>4}, request series {len(state.requests):>4}"
            )
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_mib()

    requests = sum(r[0] for r in state.requests.values())
    input_tokens = sum(s.tokens[0] for s in state.series.values())
    folded = state.folders["model"].folded
    assert requests == n, requests
    assert input_tokens == 100 * n, input_tokens
    assert folded == n - cap, folded
    assert len(state.series) == cap + 1 and (("svc", "openai", OTHER) in state.series)
    exposition = state.render_text()

    print(
        f"RSS after: {after:.1f} MiB (growth {after - before:+.1f} MiB); peak {peak_rss_mib():.1f} MiB"
    )
    print(
        f"series: {len(state.series)} ({cap} real + {OTHER}), folded events: {folded:,}, "
        f"exposition: {len(exposition):,} bytes"
    )
    print(f"apply: {elapsed:.2f} s, {elapsed / n * 1e9:.0f} ns per event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
