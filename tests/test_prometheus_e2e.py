"""End to end: the real sidecar, scraped by a real Prometheus that evaluates the real
rules and sends alerts through a real Alertmanager to a webhook this test runs.

The rules are rendered from the shipped template with the thresholds this test
relies on pinned, and every `for:` set to 0s, so alerts fire within seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml

from _binaries import require_binary
from _promql import (
    ALERTS_DIR,
    PROMETHEUS_CONFIG,
    dashboard_expressions,
    substitute_grafana_variables,
)
from _server import ServerProcess, free_port, server_process

pytestmark = pytest.mark.slow

# What the assertions below depend on, pinned so a change of the shipped defaults
# does not quietly change what this test proves.
THRESHOLDS = {"error_ratio": 0.05, "min_requests_5m": 20, "cost_per_hour_service_usd": 10}
ALERT_DEADLINE_S = 60.0


def _event(service: str, status: str, cost: float, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "service": service,
        "input_tokens": 1000,
        "output_tokens": 500,
        "status": status,
        "duration_ms": 1200,
        "ttft_ms": 300,
        "cost_usd": cost,
    }
    event.update(extra)
    return event


# Costs are powers of two so that sums are exact in binary floating point.
WARMUP = [
    _event("chat", "ok", 0.5),
    _event("chat", "error", 0.5),
    _event("search", "ok", 1 / 64),
    _event("search", "error", 1 / 64),
    # No cost_usd and a model nobody prices: counted in ai_unpriced_requests_total.
    {"provider": "acme", "model": "acme-unpriced-1", "service": "batch", "input_tokens": 10},
]
# chat: 50% errors over 30 calls and $15 in total: HighErrorRate and HighCost.
CHAT_BULK = [_event("chat", "ok" if i % 2 else "error", 0.5) for i in range(30)]
# search: 1 error in 100 calls and $1.5625: below both thresholds.
SEARCH_BULK = [_event("search", "error" if i == 0 else "ok", 1 / 64) for i in range(100)]
ALL_EVENTS = WARMUP + CHAT_BULK + SEARCH_BULK


# ---------------------------------------------------------------- webhook receiver


@dataclass
class Webhook:
    """Records every alert Alertmanager posts to it."""

    url: str
    alerts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def firing(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.alerts if a.get("status") == "firing"]

    def has(self, alertname: str, **labels: str) -> bool:
        want = {"alertname": alertname, **labels}
        return any(want.items() <= a["labels"].items() for a in self.firing())


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with hook.lock:
                hook.alerts.extend(json.loads(body)["alerts"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# ---------------------------------------------------------------- processes


class Process:
    """A child process whose output goes to a log file, shown when it misbehaves."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.name = args[0]
        self.log_path = log
        self._log: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def wait_ready(self, url: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{url} not ready within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def _test_rules(out: Path) -> Path:
    """The shipped rules with THRESHOLDS pinned and every `for:` set to 0s."""
    rendered = out.with_suffix(".rendered.yml")
    sets = [arg for name, value in THRESHOLDS.items() for arg in ("--set", f"{name}={value}")]
    subprocess.run(
        [sys.executable, str(ALERTS_DIR / "render.py"), "--output", str(rendered), *sets],
        check=True,
        capture_output=True,
        timeout=60,
    )
    data = yaml.safe_load(rendered.read_text(encoding="utf-8"))
    for group in data["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


@dataclass
class Stack:
    sidecar: ServerProcess
    prometheus_url: str
    webhook: Webhook
    client: httpx.Client

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = self.client.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr})
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: expected one series, got {result}"
        return float(result[0]["value"][1])

    def post(self, events: list[dict[str, Any]]) -> None:
        r = self.client.post(f"{self.sidecar.url}/api/usage", json=events)
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": len(events), "duplicates": 0}


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Iterator[Stack]:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("e2e")
    processes: list[Process] = []
    with (
        server_process(tmp / "usage.db") as sidecar,
        httpx.Client(timeout=10) as client,
    ):
        try:
            am_port = free_port()
            am_config = {
                "route": {
                    "receiver": "hook",
                    "group_by": ["alertname", "service"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook.url}]}],
            }
            (tmp / "alertmanager.yml").write_text(yaml.safe_dump(am_config), encoding="utf-8")
            am = Process(
                [
                    alertmanager,
                    f"--config.file={tmp / 'alertmanager.yml'}",
                    f"--storage.path={tmp / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                tmp / "alertmanager.log",
            )
            processes.append(am)

            # The shipped config, pointed at this test's ports and rules.
            config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
            config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
            config["rule_files"] = [str(_test_rules(tmp / "rules.yml"))]
            config["alerting"]["alertmanagers"][0]["static_configs"] = [
                {"targets": [f"127.0.0.1:{am_port}"]}
            ]
            (job,) = config["scrape_configs"]
            assert job["job_name"] == "ai-usage-exporter"
            job["static_configs"] = [{"targets": [f"127.0.0.1:{sidecar.port}"]}]
            (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
            prom_port = free_port()
            prom = Process(
                [
                    prometheus,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp / "prometheus.log",
            )
            processes.append(prom)
            am.wait_ready(f"http://127.0.0.1:{am_port}/-/ready")
            prom.wait_ready(f"http://127.0.0.1:{prom_port}/-/ready")
            yield Stack(sidecar, f"http://127.0.0.1:{prom_port}", webhook, client)
        finally:
            for process in reversed(processes):
                process.stop()


@pytest.fixture(scope="module")
def loaded(stack: Stack) -> Stack:
    """The stack after all events were posted and Prometheus has scraped them.

    Warm-up first: a counter series appears at its first increment and rate() cannot
    see that step, so every series the alerts look at must exist (and be scraped)
    before the traffic that should, or should not, trip them.
    """
    stack.post(WARMUP)
    # One rejected request, so the rejection series exist.
    r = stack.client.post(f"{stack.sidecar.url}/api/usage", json={"provider": 1})
    assert r.status_code >= 400, r.text

    # Unchanged for 3 s at 1 s scrapes: the warm-up values are in several samples.
    settled = (
        "changes(ai_exporter_events_accepted_total[3s]) == 0"
        f" and ai_exporter_events_accepted_total == {len(WARMUP)}"
    )
    _wait_for("the warm-up to be scraped", lambda: bool(stack.query(settled)))
    stack.post(CHAT_BULK)
    stack.post(SEARCH_BULK)
    _wait_for(
        "all events to be scraped",
        lambda: bool(stack.query(f"ai_exporter_events_accepted_total == {len(ALL_EVENTS)}")),
    )
    return stack


def _posted(key: str, **match: str) -> float:
    return sum(
        float(e.get(key, 0)) for e in ALL_EVENTS if all(e.get(k) == v for k, v in match.items())
    )


def test_counters_in_prometheus_equal_what_was_posted(loaded: Stack) -> None:
    for service in ("chat", "search", "batch"):
        sel = f'service="{service}"'
        tokens_in = _posted("input_tokens", service=service)
        tokens_out = _posted("output_tokens", service=service)
        assert loaded.value(f'sum(ai_tokens_total{{type="input",{sel}}})') == tokens_in
        assert loaded.value(f'sum(ai_tokens_total{{type="output",{sel}}})') == tokens_out
        assert loaded.value(f'sum(ai_tokens_total{{type="total",{sel}}})') == tokens_in + tokens_out
        assert loaded.value(f'sum(ai_cost_total{{type="total",{sel}}})') == _posted(
            "cost_usd", service=service
        )
    assert loaded.value('sum(ai_cost_total{type="total"})') == _posted("cost_usd") == 16 + 102 / 64
    assert loaded.value('ai_requests_total{service="chat",status="error"}') == 16
    assert loaded.value('ai_unpriced_requests_total{model="acme-unpriced-1"}') == 1


def test_high_error_rate_and_high_cost_reach_the_webhook(loaded: Stack) -> None:
    _wait_for(
        "HighErrorRate and HighCost for chat at the webhook",
        lambda: (
            loaded.webhook.has("HighErrorRate", service="chat", severity="critical")
            and loaded.webhook.has("HighCost", service="chat", severity="warning")
        ),
        timeout=ALERT_DEADLINE_S,
    )
    (alert,) = [a for a in loaded.webhook.firing() if a["labels"]["alertname"] == "HighCost"]
    assert alert["annotations"]["runbook_url"].endswith("docs/runbook.md#highcost")
    assert alert["annotations"]["description"].startswith("Service chat spent $")


def test_new_series_alerts_reach_the_webhook(loaded: Stack) -> None:
    # Both only exist because of the `unless ... offset` arm: the series are new.
    _wait_for(
        "UnpricedModelCalls and AIUsageExporterEventsRejected at the webhook",
        lambda: (
            loaded.webhook.has("UnpricedModelCalls", model="acme-unpriced-1")
            and loaded.webhook.has("AIUsageExporterEventsRejected")
        ),
        timeout=ALERT_DEADLINE_S,
    )


def test_one_percent_errors_and_low_spend_stay_quiet(loaded: Stack) -> None:
    # Wait until the rules have seen search's traffic: 1 error in 100 calls.
    _wait_for(
        "the search error ratio to be recorded",
        lambda: bool(loaded.query('service:ai_requests_errors:ratio_rate5m{service="search"} > 0')),
    )
    ratio = loaded.value('service:ai_requests_errors:ratio_rate5m{service="search"}')
    # Not exactly 0.01: the window is seconds old, and rate() extrapolates each series
    # towards the window start only as far as its counter would stay >= 0, which is
    # further for the error series (1 -> 2) than for the ok series (1 -> 100). Once
    # the data covers the whole 5 minutes the ratio is 0.01.
    assert 0.01 <= ratio < THRESHOLDS["error_ratio"] / 2
    assert loaded.value('service:ai_requests:increase5m{service="search"}') >= 100
    spend = loaded.value('service:ai_cost:increase1h{service="search"}')
    assert 102 / 64 <= spend < THRESHOLDS["cost_per_hour_service_usd"]
    # The alerts for chat fired meanwhile, so the rules were evaluated on this data.
    _wait_for(
        "HighErrorRate for chat",
        lambda: loaded.webhook.has("HighErrorRate", service="chat"),
        timeout=ALERT_DEADLINE_S,
    )
    time.sleep(2)  # two more evaluations
    assert loaded.query('ALERTS{service="search"}') == []
    assert not loaded.webhook.has("HighErrorRate", service="search")
    assert not loaded.webhook.has("HighCost", service="search")
    assert not loaded.webhook.has("HighTotalCost")


def test_every_dashboard_query_returns_data(loaded: Stack) -> None:
    empty = [
        (title, expr)
        for title, expr in dashboard_expressions()
        if not loaded.query(substitute_grafana_variables(expr, "1m"))
    ]
    assert empty == []


# ---------------------------------------------------------------- rules apps already run

# Verbatim from the alert rules of apps that used an older exporter.
LEGACY_RULES = """\
groups:
  - name: legacy
    rules:
      - alert: HighErrorRate
        expr: rate(ai_requests_by_level{level="error"}[5m]) > 0.1
      - alert: HighCost
        expr: rate(ai_cost_total[1h]) > 0.1
"""


def test_rules_apps_already_run_fire_unchanged(tmp_path: Path) -> None:
    """The two rules, loaded as they are beside alerts/compat.rules.yml, evaluate on
    real data: 100 errors in seconds is well over 0.1 errors/s over 5 minutes, and
    $10,000 (a third of it input) well over $0.1/s over an hour, in every type."""
    prometheus = require_binary("prometheus")
    (tmp_path / "legacy.rules.yml").write_text(LEGACY_RULES, encoding="utf-8")
    with (
        server_process(tmp_path / "usage.db") as sidecar,
        httpx.Client(timeout=10) as client,
    ):
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [
                str(ALERTS_DIR / "compat.rules.yml"),
                str(tmp_path / "legacy.rules.yml"),
            ],
            "scrape_configs": [
                {"job_name": "app", "static_configs": [{"targets": [f"127.0.0.1:{sidecar.port}"]}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        prom = Process(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            tmp_path / "prometheus.log",
        )
        try:
            prom.wait_ready(f"http://127.0.0.1:{port}/-/ready")

            def query(expr: str) -> list[dict[str, Any]]:
                r = client.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr})
                r.raise_for_status()
                result: list[dict[str, Any]] = r.json()["data"]["result"]
                return result

            def post(n: int, cost: float) -> None:
                events = [_event("legacy", "error", cost) for _ in range(n)]
                r = client.post(f"{sidecar.url}/api/usage", json=events)
                assert r.json() == {"accepted": n, "duplicates": 0}, r.text

            # The series exist and are scraped before the burst, so rate() sees it.
            post(1, 1.0)
            _wait_for(
                "the first error to be recorded under the old name",
                lambda: bool(query('changes(ai_requests_by_level{level="error"}[3s]) == 0')),
            )
            post(100, 100.0)
            _wait_for(
                "both rules to fire",
                lambda: len(query('ALERTS{alertstate="firing"}')) >= 4,
            )
            errors = query('rate(ai_requests_by_level{level="error"}[5m]) > 0.1')
            assert [s["metric"] for s in errors] == [
                {"instance": f"127.0.0.1:{sidecar.port}", "job": "app", "level": "error"}
            ]
            # ...which is the counter itself, under its old name.
            assert query('ai_requests_by_level{level="error"}')[0]["value"][1] == "101"
            # The old cost rule fires for every type: input, output and total alike.
            cost = query("rate(ai_cost_total[1h]) > 0.1")
            assert sorted(s["metric"]["type"] for s in cost) == ["input", "output", "total"]
            firing = sorted(
                (s["metric"]["alertname"], s["metric"].get("type", ""))
                for s in query('ALERTS{alertstate="firing"}')
            )
            assert firing == [
                ("HighCost", "input"),
                ("HighCost", "output"),
                ("HighCost", "total"),
                ("HighErrorRate", ""),
            ]
        finally:
            prom.stop()
