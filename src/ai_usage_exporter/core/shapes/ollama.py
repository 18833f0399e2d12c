"""Ollama's native API: counts at the top level of the final message, durations in ns.

``prompt_eval_count`` is the prompt tokens evaluated (absent when the whole prompt was
cached) and ``eval_count`` the tokens generated; its OpenAI-compatible endpoint returns
the OpenAI Chat shape instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.shapes._common import Counter, Reading

MAP: tuple[tuple[str, str], ...] = (
    ("prompt_eval_count", "input_tokens"),
    ("eval_count", "output_tokens"),
    ("total_duration (ns, response)", "duration_ms"),
)


def is_ollama(usage: Mapping[str, Any]) -> bool:
    return "prompt_eval_count" in usage or "eval_count" in usage


def read(usage: Mapping[str, Any], count: Counter, provider: str | None, reading: Reading) -> None:
    c = reading.counts
    c["input_tokens"] = count(usage, "prompt_eval_count")
    c["output_tokens"] = count(usage, "eval_count")
