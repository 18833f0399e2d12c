"""PromQL helpers for the rule and dashboard tests: the exported metric names, and
pulling expressions out of the rule files and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
ALERTS_DIR = REPO / "alerts"
RULES_FILES = sorted(ALERTS_DIR.glob("*.rules.yml"))
RULE_TESTS = sorted((ALERTS_DIR / "tests").glob("*.yml"))
DASHBOARD = REPO / "prometheus" / "grafana-dashboard.json"
PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO / "prometheus" / "alertmanager.yml"

COUNTERS = (
    "ai_requests_total",
    "ai_tokens_total",
    "ai_cost_total",
    "ai_requests_by_level_total",
    "ai_unpriced_requests_total",
    "ai_exporter_events_accepted_total",
    "ai_exporter_events_duplicate_total",
    "ai_exporter_events_rejected_total",
    "ai_exporter_label_values_folded_total",
    "ai_gateway_rejected_total",
    "ai_gateway_rate_limiter_errors_total",
    "ai_gateway_fallbacks_total",
)
GAUGES = (
    "ai_average_duration_ms",
    "ai_exporter_build_info",
    "ai_budget_limit",
    "ai_budget_used",
    "ai_budget_remaining",
    "ai_budget_hours_to_exhaustion",
    "ai_provider_billed_usd",
    "ai_spend_capture_ratio",
    "ai_spend_price_drift_models",
    "ai_provider_fetch_timestamp_seconds",
    "ai_provider_fetch_success",
)
HISTOGRAMS = ("ai_request_duration_seconds", "ai_time_to_first_token_seconds")
# Series Prometheus makes itself for every scrape target.
PROMETHEUS_SERIES = ("up",)

EXPORTED: frozenset[str] = frozenset(
    COUNTERS
    + GAUGES
    + tuple(f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count"))
)

# Words that look like identifiers but name no series: operators, modifiers,
# aggregations (which may be followed by `by (...)` rather than by a parenthesis).
_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right",
        "and", "or", "unless", "offset", "bool", "inf", "nan",
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
        "count_values", "bottomk", "topk", "quantile", "atan2",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """Every series name a PromQL expression selects, by a small tokenizer.

    Strings, label matchers, ranges and grouping label lists are blanked first, so
    what remains is names, functions (followed by `(`), keywords and numbers.
    """
    names = set(_NAME_MATCHER.findall(expr))
    text = re.sub(r"#[^\n]*", "", expr)
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = _LABEL_LIST.sub(r"\1", text)
    for match in _IDENTIFIER.finditer(text):
        word = match.group(1)
        if word.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def load_rule_groups(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    groups: list[dict[str, Any]] = data["groups"]
    return groups


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule (recording and alerting) of a rules file, in order."""
    return [rule for group in load_rule_groups(path) for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [r for path in RULES_FILES for r in rules(path) if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for path in RULES_FILES for r in rules(path) if "record" in r}


def dashboard_expressions(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of the dashboard, nested rows included."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((panel.get("title", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text or "")
        if match:
            found.append((f"variable {variable['name']}", match.group(1)))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append((f"annotation {annotation['name']}", annotation["expr"]))
    return found


def substitute_grafana_variables(expr: str, rate_interval: str = "1m") -> str:
    """Replace Grafana's variables so Prometheus itself can run the expression."""
    for variable in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(variable, rate_interval)
    return expr.replace("$service", ".*")
