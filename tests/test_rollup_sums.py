"""The rollup and bucket sums of a batch equal the events' own counts, per key and bucket."""

from __future__ import annotations

from ai_usage_exporter import UsageEvent
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.core.rollup import VALUE_COLUMNS, aggregate_timed, rollup_key
from ai_usage_exporter.core.shapes import USAGE_FIELDS


def test_sums_per_key_and_minute_equal_the_events_counts() -> None:
    priced = []
    for i in range(40):
        usage = {f: (i * 7 + j * 3) % 11 for j, f in enumerate(USAGE_FIELDS)}
        usage["input_tokens"] = 100 + i  # at least its parts (cached, audio, ...)
        usage["output_tokens"] = 100 + 2 * i
        e = UsageEvent(provider="openai", model=("a", "b")[i % 2], timestamp=1_700_000_000 + i * 20,
                       **usage)  # type: ignore[arg-type]  # fmt: skip
        priced.append((e, Cost(0.0, 0.0, 0.0, "genai-prices")))
    rollup, buckets = aggregate_timed(priced)
    col = {c: i for i, c in enumerate(VALUE_COLUMNS)}
    for key, v in rollup.items():
        mine = [e for e, _ in priced if rollup_key(e) == key]
        assert v[col["requests"]] == len(mine) == 20
        for f in USAGE_FIELDS:
            assert v[col[f]] == sum(getattr(e, f) for e in mine), f
    for bkey, v in buckets.items():
        step, start, key = bkey[0], bkey[1], tuple(bkey[2:])
        mine = [
            e for e, _ in priced
            if rollup_key(e) == key and start <= e.timestamp < start + step
        ]  # fmt: skip
        assert v[col["requests"]] == len(mine) > 0
        for f in USAGE_FIELDS:
            assert v[col[f]] == sum(getattr(e, f) for e in mine), (step, f)
