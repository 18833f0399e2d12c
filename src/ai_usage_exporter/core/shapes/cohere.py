"""Cohere Chat (v2 ``usage``, v1 ``meta``): ``billed_units`` are what the call is billed for.

``billed_units.input_tokens`` and ``output_tokens`` are the billed counts; ``tokens``
holds the counts the model saw (the prompt template and tool definitions included),
which Cohere does not bill, so it is used only when ``billed_units`` is absent.
``cached_tokens`` counts prompt tokens served from Cohere's cache within ``tokens``,
not within the billed units, and carries no price of its own, so it is not counted.
A v1 response carries the same object as ``meta``; a v2 stream sends it in the
``message-end`` event's ``delta.usage``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.shapes._common import Counter, Reading, sub

MAP: tuple[tuple[str, str], ...] = (
    ("billed_units.input_tokens (else tokens.input_tokens)", "input_tokens"),
    ("billed_units.output_tokens (else tokens.output_tokens)", "output_tokens"),
)


def is_cohere(usage: Mapping[str, Any]) -> bool:
    return isinstance(usage.get("billed_units"), Mapping) or (
        isinstance(usage.get("tokens"), Mapping) and "input_tokens" not in usage
    )


def read(usage: Mapping[str, Any], count: Counter, provider: str | None, reading: Reading) -> None:
    c = reading.counts
    key = "billed_units" if isinstance(usage.get("billed_units"), Mapping) else "tokens"
    units = sub(usage, key)
    where = f"{count.where}.{key}"
    c["input_tokens"] = count(units, "input_tokens", where)
    c["output_tokens"] = count(units, "output_tokens", where)
