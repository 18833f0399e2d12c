"""The JSON view served at /api/metrics (pure)."""

from __future__ import annotations

from typing import Any

from ai_usage_exporter.core.events.model import format_timestamp
from ai_usage_exporter.core.metrics import ExporterCounts


def json_view(
    *,
    summary: dict[str, Any],
    exporter: ExporterCounts,
    started_at: float,
    now: float,
    version: str,
    genai_prices_version: str,
) -> dict[str, Any]:
    """Totals and breakdowns for a person; label values are the real ones, never folded."""
    totals = summary["totals"]
    view: dict[str, Any] = {
        "exporter": {
            "version": version,
            "genai_prices_version": genai_prices_version,
            "started_at": format_timestamp(started_at),
            "uptime_seconds": round(now - started_at, 3),
            "events_accepted": exporter.accepted,
            "events_duplicate": exporter.duplicate,
            "events_rejected": dict(exporter.rejected),
        },
        "totals": totals,
        "by_level": {
            level: summary["by_level"].get(level, 0) for level in ("debug", "info", "warn", "error")
        },
    }
    for name in (
        "by_service",
        "by_model",
        "by_agent",
        "by_tool",
        "by_tenant",
        "by_node",
        "by_key",
    ):
        view[name] = summary[name]
        if f"{name}_truncated" in summary:
            view[f"{name}_truncated"] = summary[f"{name}_truncated"]
    view["unpriced_models"] = summary["unpriced_models"]
    return view
