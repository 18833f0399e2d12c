"""Anthropic Messages usage (anthropic-sdk-python ``types/usage.py``), also as Bedrock
InvokeModel and Vertex AI return it for Claude.

``input_tokens`` excludes both cache counts, so reads and writes are added back.
``cache_creation.ephemeral_1h_input_tokens`` is the part of the cache writes billed at
the one-hour rate (2x base input, against 1.25x for five minutes).
``output_tokens_details.thinking_tokens`` is the thinking inside ``output_tokens``.
``server_tool_use.web_search_requests`` are billed per request; web fetches are not
billed beyond their tokens. ``iterations`` (context compaction) lists every sampling
step; the top-level counts leave out the ``compaction`` steps, which are billed too, so
their tokens are added.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.shapes._common import Counter, Reading, sub, tier_value

MAP: tuple[tuple[str, str], ...] = (
    ("input_tokens + cache_read_input_tokens + cache_creation_input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cached_input_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
    ("cache_creation.ephemeral_1h_input_tokens", "cache_write_1h_tokens"),
    ("output_tokens_details.thinking_tokens", "reasoning_tokens"),
    ("server_tool_use.web_search_requests", "web_search_requests"),
    ("iterations[type=compaction]", "added to input, output and cache counts"),
    ("service_tier", "service_tier"),
)


def is_anthropic(usage: Mapping[str, Any]) -> bool:
    return (
        "cache_read_input_tokens" in usage
        or "cache_creation_input_tokens" in usage
        or "cache_creation" in usage
        or "server_tool_use" in usage
    )


def _add_step(c: dict[str, int], step: Mapping[str, Any], count: Counter, where: str) -> None:
    read = count(step, "cache_read_input_tokens", where)
    write = count(step, "cache_creation_input_tokens", where)
    cache_creation = sub(step, "cache_creation")
    write_1h = count(cache_creation, "ephemeral_1h_input_tokens", f"{where}.cache_creation")
    if not write and cache_creation:
        write = write_1h + count(
            cache_creation, "ephemeral_5m_input_tokens", f"{where}.cache_creation"
        )
    c["input_tokens"] += count(step, "input_tokens", where) + read + write
    c["output_tokens"] += count(step, "output_tokens", where)
    c["cached_input_tokens"] += read
    c["cache_write_tokens"] += write
    c["cache_write_1h_tokens"] += write_1h
    details = sub(step, "output_tokens_details")
    c["reasoning_tokens"] += count(details, "thinking_tokens", f"{where}.output_tokens_details")


def read(usage: Mapping[str, Any], count: Counter, provider: str | None, reading: Reading) -> None:
    c = reading.counts
    _add_step(c, usage, count, count.where)
    tools = sub(usage, "server_tool_use")
    c["web_search_requests"] = count(tools, "web_search_requests", f"{count.where}.server_tool_use")
    iterations = usage.get("iterations")
    if isinstance(iterations, list):
        for i, step in enumerate(iterations):
            if isinstance(step, Mapping) and step.get("type") == "compaction":
                _add_step(c, step, count, f"{count.where}.iterations[{i}]")
    reading.service_tier = tier_value(usage.get("service_tier"))
