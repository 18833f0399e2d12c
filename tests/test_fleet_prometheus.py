"""Three sidecars on one PostgreSQL database, scraped by a real Prometheus.

10,000 events are spread over the three; 5% are posted again to a different sidecar
with the same idempotency key, and one sidecar is killed with SIGKILL while traffic
flows (its unanswered batches fail over to the next sidecar) and then restarted.
Prometheus' `sum()` over the fleet must equal the posted tokens exactly, every
duplicate counted once, before and after another SIGKILL and restart.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from _binaries import require_binary
from _pg import fresh_schema
from _server import ServerProcess, exposition_samples, free_port

pytestmark = pytest.mark.slow

N_EVENTS = 10_000
BATCH = 100
RETRY_EVERY = 20  # 5%
SIDECARS = 3


def _event(i: int) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": ("gpt-4o-mini", "gpt-4o")[i % 2],
        "service": f"svc-{i % 3}",
        "input_tokens": 100 + i % 97,
        "output_tokens": 10 + i % 13,
        "duration_ms": 50 + i % 400,
        "idempotency_key": f"ev-{i:05d}",
    }


EVENTS = [_event(i) for i in range(N_EVENTS)]
POSTED_INPUT = sum(e["input_tokens"] for e in EVENTS)
POSTED_OUTPUT = sum(e["output_tokens"] for e in EVENTS)


class Fleet:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.ports = [free_port() for _ in range(SIDECARS)]
        self.sidecars: list[ServerProcess | None] = [None] * SIDECARS
        self.lock = threading.Lock()

    def start(self, i: int) -> None:
        server = ServerProcess(self.url, ["--instance", f"sidecar-{i}"], port=self.ports[i])
        with self.lock:
            self.sidecars[i] = server

    def kill(self, i: int) -> None:
        with self.lock:
            server, self.sidecars[i] = self.sidecars[i], None
        assert server is not None
        server.kill()  # SIGKILL: no drain, no shutdown hook

    def base(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def post(self, client: httpx.Client, batch: list[dict[str, Any]], first: int) -> dict[str, int]:
        """Post to sidecar `first`; on a refused connection or a 5xx, retry on the next one.

        A batch a killed sidecar committed but never answered is retried elsewhere with
        the same keys, so its events come back as duplicates: still counted once.
        """
        deadline = time.monotonic() + 60
        for attempt in itertools.count():
            i = (first + attempt) % SIDECARS
            try:
                r = client.post(f"{self.base(i)}/api/usage", json=batch)
                if r.status_code == 200:
                    result: dict[str, int] = r.json()
                    return result
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("batch not accepted by any sidecar within 60 s")
            time.sleep(0.05)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        for i, server in enumerate(self.sidecars):
            if server is not None:
                server.kill()
                self.sidecars[i] = None


class Prometheus:
    def __init__(self, binary: str, targets: list[str], tmp: Path) -> None:
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {"job_name": "ai-usage-fleet", "static_configs": [{"targets": targets}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "prometheus.log").open("wb")
        import subprocess

        self.proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait_for("Prometheus to be ready", self._ready, 30)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def value(self, expr: str) -> float | None:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        r.raise_for_status()
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Fleet, Prometheus]]:
    binary = require_binary("prometheus")
    with fresh_schema() as url:
        fleet = Fleet(url, tmp_path)
        prometheus: Prometheus | None = None
        try:
            # Started at once, as a rollout would: schema creation must not race.
            threads = [threading.Thread(target=fleet.start, args=(i,)) for i in range(SIDECARS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert all(s is not None for s in fleet.sidecars), "a sidecar did not start"
            prometheus = Prometheus(binary, [f"127.0.0.1:{p}" for p in fleet.ports], tmp_path)
            yield fleet, prometheus
        finally:
            if prometheus is not None:
                prometheus.stop()
            fleet.stop()


def _fleet_sums_equal_posted(prometheus: Prometheus) -> bool:
    return (
        prometheus.value('count(up{job="ai-usage-fleet"} == 1)') == SIDECARS
        and prometheus.value('sum(ai_tokens_total{type="input"})') == POSTED_INPUT
        and prometheus.value('sum(ai_tokens_total{type="output"})') == POSTED_OUTPUT
        and prometheus.value("sum(ai_requests_total)") == N_EVENTS
    )


def test_three_sidecars_sum_to_the_posted_tokens_across_kills(
    fleet: tuple[Fleet, Prometheus],
) -> None:
    sidecars, prometheus = fleet
    batches = [EVENTS[i : i + BATCH] for i in range(0, N_EVENTS, BATCH)]
    retries = [e for e in EVENTS[::RETRY_EVERY]]
    retry_batches = [retries[i : i + BATCH] for i in range(0, len(retries), BATCH)]
    # Each batch goes to sidecar n % 3, its retry to the next one, interleaved in time.
    jobs: list[tuple[list[dict[str, Any]], int]] = [
        (b, n % SIDECARS) for n, b in enumerate(batches)
    ]
    for k, rb in enumerate(retry_batches):
        first = int(rb[0]["idempotency_key"][3:]) // BATCH % SIDECARS
        jobs.insert(20 * (k + 1), (rb, (first + 1) % SIDECARS))

    results: list[dict[str, int]] = []
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(sidecars.post, client, b, first) for b, first in jobs]
        # Mid-traffic: SIGKILL sidecar 1, then bring it back under the same name.
        futures[len(futures) // 3].result()
        sidecars.kill(1)
        futures[len(futures) // 2].result()
        sidecars.start(1)
        results = [f.result() for f in futures]

    assert sum(r["accepted"] for r in results) == N_EVENTS
    assert sum(r["duplicates"] for r in results) >= len(retries)
    _wait_for("Prometheus to see the posted totals", lambda: _fleet_sums_equal_posted(prometheus))

    # The ledger agrees, and every member serves the same fleet gauges.
    fleet_text = httpx.get(f"{sidecars.base(0)}/metrics/fleet", timeout=10).text
    gauges = exposition_samples(fleet_text)
    assert gauges[("ai_fleet_requests", frozenset())] == N_EVENTS
    assert gauges[("ai_fleet_tokens", frozenset({("type", "input")}))] == POSTED_INPUT
    assert gauges[("ai_fleet_instances", frozenset())] == SIDECARS
    view = httpx.get(f"{sidecars.base(2)}/api/metrics", params={"scope": "fleet"}).json()
    assert view["totals"]["tokens"]["output_tokens"] == POSTED_OUTPUT
    assert sum(view["instances"].values()) == N_EVENTS

    # Quiet now: SIGKILL another sidecar and restart it; its counters come back exactly.
    target = f'instance="127.0.0.1:{sidecars.ports[0]}"'
    own_input = f'sum(ai_tokens_total{{type="input",{target}}})'
    before = prometheus.value(own_input)
    assert before is not None and 0 < before < POSTED_INPUT
    sidecars.kill(0)
    _wait_for(
        "the killed sidecar to be seen down", lambda: prometheus.value(f"up{{{target}}}") == 0
    )
    sidecars.start(0)
    _wait_for(
        "the restarted sidecar to be scraped",
        lambda: prometheus.value(f"ai_exporter_events_accepted_total{{{target}}}") == 0,
    )
    _wait_for("the posted totals again", lambda: _fleet_sums_equal_posted(prometheus))
    assert prometheus.value(own_input) == before
