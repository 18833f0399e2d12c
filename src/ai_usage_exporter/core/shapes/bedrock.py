"""Amazon Bedrock Converse usage (botocore ``bedrock-runtime`` ``TokenUsage``).

``inputTokens`` excludes the cache counts, as Anthropic's ``input_tokens`` does, so
``cacheReadInputTokens`` and ``cacheWriteInputTokens`` are added back;
``cacheDetails`` splits the writes by TTL. A whole Converse response carries
``metrics.latencyMs`` and, for tiered calls, ``serviceTier.type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.shapes._common import Counter, Reading

MAP: tuple[tuple[str, str], ...] = (
    ("inputTokens + cacheReadInputTokens + cacheWriteInputTokens", "input_tokens"),
    ("outputTokens", "output_tokens"),
    ("cacheReadInputTokens", "cached_input_tokens"),
    ("cacheWriteInputTokens", "cache_write_tokens"),
    ("cacheDetails[ttl=1h].inputTokens", "cache_write_1h_tokens"),
    ("serviceTier.type (response)", "service_tier"),
    ("metrics.latencyMs (response)", "duration_ms"),
)


def is_bedrock(usage: Mapping[str, Any]) -> bool:
    return "inputTokens" in usage or "outputTokens" in usage


def read(usage: Mapping[str, Any], count: Counter, provider: str | None, reading: Reading) -> None:
    c = reading.counts
    cached = count(usage, "cacheReadInputTokens")
    write = count(usage, "cacheWriteInputTokens")
    c["input_tokens"] = count(usage, "inputTokens") + cached + write
    c["output_tokens"] = count(usage, "outputTokens")
    c["cached_input_tokens"] = cached
    c["cache_write_tokens"] = write
    details = usage.get("cacheDetails")
    if isinstance(details, list):
        for i, item in enumerate(details):
            if isinstance(item, Mapping) and item.get("ttl") == "1h":
                c["cache_write_1h_tokens"] += count(
                    item, "inputTokens", f"{count.where}.cacheDetails[{i}]"
                )
