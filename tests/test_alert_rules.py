"""The shipped Prometheus rules, configs and dashboard: valid, unit-tested, and
built only from the metrics the sidecar exports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from _binaries import require_binary
from _promql import (
    ALERTMANAGER_CONFIG,
    ALERTS_DIR,
    DASHBOARD,
    EXPORTED,
    PROMETHEUS_CONFIG,
    PROMETHEUS_SERIES,
    REPO,
    RULE_TESTS,
    RULES_FILES,
    alert_rules,
    dashboard_expressions,
    metric_names,
    recorded_names,
    rules,
)

RENDER = ALERTS_DIR / "render.py"
RUNBOOK = REPO / "docs" / "runbook.md"


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )


# ---------------------------------------------------------------- rendering


def test_committed_rules_file_is_rendered_from_thresholds() -> None:
    result = _run(sys.executable, RENDER, "--check")
    assert result.returncode == 0, result.stderr


def test_render_fills_thresholds_and_overrides(tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    result = _run(sys.executable, RENDER, "--output", out, "--set", "error_ratio=0.25")
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert "[[" not in text
    (high_error,) = [r for r in rules(out) if r.get("alert") == "HighErrorRate"]
    assert "service:ai_requests_errors:ratio_rate5m > 0.25\n" in high_error["expr"]


def test_render_rejects_unused_and_unknown_thresholds(tmp_path: Path) -> None:
    thresholds = yaml.safe_load((ALERTS_DIR / "thresholds.yml").read_text(encoding="utf-8"))
    del thresholds["error_ratio"]
    thresholds["error_ratoi"] = 0.05
    bad = tmp_path / "thresholds.yml"
    bad.write_text(yaml.safe_dump(thresholds), encoding="utf-8")
    result = _run(sys.executable, RENDER, "--thresholds", bad, "--output", tmp_path / "r.yml")
    assert result.returncode == 2
    assert "not defined: error_ratio" in result.stderr
    result = _run(sys.executable, RENDER, "--set", "no_such=1", "--output", tmp_path / "r.yml")
    assert result.returncode == 2
    assert "no such threshold: no_such" in result.stderr


def test_the_job_setting_reaches_the_rules_and_their_tests(tmp_path: Path) -> None:
    out = tmp_path / "ai-usage.rules.yml"
    result = _run(
        sys.executable, RENDER, "--set", "job=llm-sidecar", "--output", out,
        "--tests-output", tmp_path / "tests",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    by_name = {r.get("alert"): r["expr"] for r in rules(out)}
    assert by_name["AIUsageExporterDown"] == 'up{job="llm-sidecar"} == 0'
    assert by_name["AIUsageExporterAbsent"] == 'absent(up{job="llm-sidecar"})'
    assert 'job="ai-usage-exporter"' not in out.read_text(encoding="utf-8")
    rendered = tmp_path / "tests" / "exporter.test.yml"
    assert 'up{job="llm-sidecar",instance="127.0.0.1:9478"}' in rendered.read_text("utf-8")
    # The rendered promtool tests pass against the rendered rules: they moved together.
    check = _run(require_binary("promtool"), "test", "rules", rendered)
    assert check.returncode == 0, check.stdout + check.stderr
    # A one-off --output leaves the committed tests alone; a bad job name is refused.
    assert _run(sys.executable, RENDER, "--check").returncode == 0
    bad = _run(sys.executable, RENDER, "--set", 'job=a"b', "--output", out)
    assert bad.returncode == 2
    assert "job 'a\"b' must be a plain job_name" in bad.stderr


def test_compose_prometheus_scrapes_the_job_the_rules_watch() -> None:
    thresholds = yaml.safe_load((ALERTS_DIR / "thresholds.yml").read_text(encoding="utf-8"))
    for config_path in (PROMETHEUS_CONFIG, REPO / "deploy" / "prometheus.yml"):
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        jobs = [j["job_name"] for j in config["scrape_configs"]]
        assert jobs == [thresholds["job"]], config_path


# ---------------------------------------------------------------- promtool, amtool


@pytest.mark.parametrize("path", RULES_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = _run(require_binary("promtool"), "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool unit tests in alerts/tests/"
    result = _run(require_binary("promtool"), "test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_promtool_check_config() -> None:
    # check config resolves rule_files relative to the config file, and checks them too.
    result = _run(require_binary("promtool"), "check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES_FILES)} rule files found" in result.stdout


def test_promtool_check_compose_config(tmp_path: Path) -> None:
    # The compose variant reads the read token from a secret mounted at run time, and
    # promtool insists the file exists: point it at one, and the rules at this checkout.
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    (tmp_path / "token").write_text("x")
    (job,) = config["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/read_token"
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    assert config["rule_files"] == ["../alerts/*.rules.yml"]
    config["rule_files"] = [str(ALERTS_DIR / "*.rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = _run(require_binary("promtool"), "check", "config", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES_FILES)} rule files found" in result.stdout


def test_amtool_check_config() -> None:
    result = _run(require_binary("amtool"), "check-config", ALERTMANAGER_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- what the configs say


def test_prometheus_config_scrapes_the_sidecar_and_alerts_to_alertmanager() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ai-usage-exporter"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9478"]}]
    loaded = {
        p.resolve()
        for pattern in config["rule_files"]
        for p in PROMETHEUS_CONFIG.parent.glob(pattern)
    }
    assert loaded == {p.resolve() for p in RULES_FILES}
    (am,) = config["alerting"]["alertmanagers"]
    assert am["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]


def test_alertmanager_routes_by_severity() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    routes = {tuple(r["matchers"]): r["receiver"] for r in config["route"]["routes"]}
    assert routes == {
        ('severity="critical"',): "pager",
        ('severity=~"warning|info"',): "chat",
    }
    assert {r["name"] for r in config["receivers"]} == {"pager", "chat"}


# ---------------------------------------------------------------- house style


def _alert_ids() -> list[str]:
    return [a["alert"] for a in alert_rules()]


@pytest.mark.parametrize("alert", alert_rules(), ids=_alert_ids())
def test_alert_follows_house_style(alert: dict[str, Any]) -> None:
    name = alert["alert"]
    assert re.fullmatch(r"(?:[A-Z][a-z0-9]*|AI)+", name), f"{name}: not CamelCase"
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = alert["annotations"]
    assert "{{" not in annotations["summary"], f"{name}: summary must be static"
    assert annotations["summary"].endswith(".")
    assert "{{" in annotations["description"], f"{name}: description must be templated"
    assert annotations["runbook_url"].endswith(f"docs/runbook.md#{name.lower()}")


def test_runbook_has_a_section_per_alert() -> None:
    headings = re.findall(r"^## (\S+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    assert sorted(headings) == sorted(_alert_ids())


def _unit_test_cases() -> dict[str, dict[str, int]]:
    """alertname -> number of cases expecting it to fire, and expecting silence."""
    cases: dict[str, dict[str, int]] = {}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in test.get("alert_rule_test", []):
                counts = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
                counts["firing" if case.get("exp_alerts") else "quiet"] += 1
    return cases


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    cases = _unit_test_cases()
    for name in _alert_ids():
        assert cases.get(name, {}).get("firing", 0) >= 1, f"{name}: no case where it fires"
        assert cases.get(name, {}).get("quiet", 0) >= 1, f"{name}: no case where it is quiet"


# ---------------------------------------------------------------- metric names


def test_metric_names_tokenizer() -> None:
    expr = """
      sum by (service, le) (rate(ai_x_bucket{le="+Inf", a=~"b|c{1}"}[5m] offset 1d))
      / on (service) group_left (model) up   # not_a_metric in a comment
      and ignoring(instance) {__name__="by_name"} > bool 1e3 unless absent(nan_gauge) * Inf
      or histogram_quantile(0.95, max without (x) (service:rec:rate5m)) and $__rate_interval
    """
    assert metric_names(expr) == {"ai_x_bucket", "up", "by_name", "nan_gauge", "service:rec:rate5m"}


def test_rules_use_only_exported_metrics() -> None:
    allowed = EXPORTED | set(PROMETHEUS_SERIES) | recorded_names()
    for path in RULES_FILES:
        for rule in rules(path):
            used = metric_names(rule["expr"])
            name = rule.get("alert") or rule.get("record")
            assert used, f"{name}: found no metric in {rule['expr']!r}"
            assert used <= allowed, f"{name}: unknown metrics {sorted(used - allowed)}"


def test_dashboard_uses_only_exported_metrics() -> None:
    allowed = EXPORTED | set(PROMETHEUS_SERIES)
    expressions = dashboard_expressions()
    assert expressions
    for title, expr in expressions:
        used = metric_names(expr)
        assert used, f"{title}: found no metric in {expr!r}"
        assert used <= allowed, f"{title}: unknown metrics {sorted(used - allowed)}"


def test_dashboard_covers_the_main_views() -> None:
    used = set().union(*(metric_names(e) for _, e in dashboard_expressions(DASHBOARD)))
    assert {
        "ai_requests_total",
        "ai_tokens_total",
        "ai_cost_total",
        "ai_request_duration_seconds_bucket",
        "ai_time_to_first_token_seconds_bucket",
        "ai_unpriced_requests_total",
        "ai_requests_by_level_total",
    } <= used


def _all_expressions() -> list[tuple[str, str]]:
    found = [
        (str(r.get("alert") or r.get("record")), r["expr"]) for p in RULES_FILES for r in rules(p)
    ]
    return found + dashboard_expressions()


def test_cost_is_always_selected_with_type_total() -> None:
    # total = input + output, so any other selection of ai_cost_total double counts.
    for where, expr in _all_expressions():
        for match in re.finditer(r"ai_cost_total(\{[^}]*\})?", expr):
            assert match.group(1) and 'type="total"' in match.group(1), f"{where}: {expr!r}"


def test_tokens_are_never_summed_over_type() -> None:
    # The types overlap (total = input + output; cached_input is part of input...).
    for where, expr in _all_expressions():
        for match in re.finditer(r"ai_tokens_total(\{[^}]*\})?", expr):
            selects_one = bool(match.group(1)) and re.search(r'type="\w+"', match.group(1))
            assert selects_one or "by (type)" in expr, f"{where}: {expr!r}"
