"""Time `PriceBook.price` per event after warm-up against genai-prices' `calc_price`.

Run from the repository root: ``python3 -m bench.pricing`` (or ``--smoke`` for a quick
check). Prints ns per event for both on the same events and whether the price book
meets its 2 µs target; it asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime

from genai_prices import calc_price

from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.core.pricing.rates import genai_prices_version, genai_usage

TARGET_NS = 2000.0

# A realistic mix: (provider, model, weight); includes a tiered model, a dated price,
# DeepSeek's off-peak hours, an Azure alias and a self-hosted model.
MIX: tuple[tuple[str, str, int], ...] = (
    ("openai", "gpt-4o-mini", 30),
    ("openai", "gpt-4o", 15),
    ("openai", "o3-mini", 5),
    ("anthropic", "claude-sonnet-4-5", 15),
    ("anthropic", "claude-haiku-4-5", 10),
    ("gemini", "gemini-2.5-flash", 8),
    ("vertex", "gemini-2.5-pro", 4),
    ("groq", "llama-3.3-70b-versatile", 5),
    ("deepseek", "deepseek-chat", 4),
    ("azure", "prod-gpt4o-eastus", 4),
)
OVERRIDES = {"providers": {"azure": {"aliases": {"prod-gpt4o-*": "gpt-4o"}}}}
GENAI_MODEL = {"prod-gpt4o-eastus": "gpt-4o"}


def make_events(n: int, seed: int = 7) -> list[UsageEvent]:
    rng = random.Random(seed)
    now = time.time()
    population = [(p, m) for p, m, w in MIX for _ in range(w)]
    events = []
    for _ in range(n):
        provider, model = rng.choice(population)
        input_tokens = rng.choice((rng.randint(100, 8000), rng.randint(8000, 250_000)))
        cached = rng.randint(0, input_tokens // 2)
        output_tokens = rng.randint(1, 4000)
        events.append(
            UsageEvent(
                provider=provider,
                model=model,
                input_tokens=input_tokens,
                cached_input_tokens=cached,
                output_tokens=output_tokens,
                reasoning_tokens=output_tokens // 3 if model.startswith("o3") else 0,
                timestamp=now - rng.uniform(0, 3 * 86_400),
            )
        )
    return events


def time_book(book: PriceBook, events: list[UsageEvent], rounds: int) -> float:
    price = book.price
    for e in events:  # warm-up: resolve every (model, period) once
        price(e)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for e in events:
            price(e)
        best = min(best, (time.perf_counter_ns() - start) / len(events))
    return best


def time_calc_price(events: list[UsageEvent]) -> float:
    prepared = [
        (
            genai_usage(e),
            GENAI_MODEL.get(e.model, e.model),
            e.provider,
            datetime.fromtimestamp(e.timestamp, UTC),
        )
        for e in events
    ]
    calc_price(prepared[0][0], prepared[0][1], provider_id=prepared[0][2])  # warm its caches
    start = time.perf_counter_ns()
    for usage, model, provider, ts in prepared:
        calc_price(usage, model, provider_id=provider, genai_request_timestamp=ts)
    return (time.perf_counter_ns() - start) / len(prepared)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="a few iterations, under 2 s")
    args = parser.parse_args(argv)
    n_events, rounds, n_reference = (200, 3, 200) if args.smoke else (10_000, 20, 5_000)

    events = make_events(n_events)
    book = PriceBook(OVERRIDES)
    book_ns = time_book(book, events, rounds)
    reference_ns = time_calc_price(events[:n_reference])
    print(f"genai-prices {genai_prices_version}; {n_events} events over {len(MIX)} models")
    print(f"PriceBook.price          {book_ns:10.0f} ns/event (best of {rounds} rounds)")
    print(f"genai_prices.calc_price  {reference_ns:10.0f} ns/event ({n_reference} events)")
    print(f"ratio                    {reference_ns / book_ns:10.0f}x faster")
    verdict = "met" if book_ns <= TARGET_NS else "NOT met"
    print(f"target <= {TARGET_NS:.0f} ns/event: {verdict}")


if __name__ == "__main__":
    main()
