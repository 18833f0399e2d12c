"""The SDK against the real sidecar over HTTP: counters equal what the provider
returned, budgets stop calls and show as gauges, and a sidecar outage loses nothing."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _fake_provider import (
    ANTHROPIC_DELTA_USAGE,
    ANTHROPIC_USAGE,
    OPENAI_CHAT_USAGE,
    OPENAI_STREAM_USAGE,
)
from _sdk import fake_provider, reset_sdk
from _server import free_port, scrape, server_process, wait_healthy
from ai_usage_exporter import Budget, BudgetExceeded, configure, flush, instrument, usage_context
from ai_usage_exporter.core.metrics import TOKEN_TYPES

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

MESSAGES = [{"role": "user", "content": "Say hello"}]
TOKEN = "sdk-write-token"


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with fake_provider() as url:
        yield url


@pytest.fixture(autouse=True)
def clean_sdk() -> Iterator[None]:
    reset_sdk()
    yield
    reset_sdk()


def totals(samples: dict[Any, float], name: str, by: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name:
            key = dict(labels).get(by, "")
            out[key] = out.get(key, 0.0) + v
    return out


def test_counters_equal_what_the_provider_returned(provider: str, tmp_path: Path) -> None:
    with server_process(tmp_path / "ledger.db", env={"AI_USAGE_EXPORTER_WRITE_TOKEN": TOKEN}) as s:
        configure(url=s.url, write_token=TOKEN)
        oai = instrument(openai.OpenAI(base_url=f"{provider}/v1", api_key="k", max_retries=0))
        ant = instrument(anthropic.Anthropic(base_url=provider, api_key="k", max_retries=0))
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        for _ in oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            pass
        abandoned = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        it = iter(abandoned)
        next(it), next(it)
        del it, abandoned
        gc.collect()
        ant.messages.create(model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES)
        with ant.messages.stream(
            model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES
        ) as stream:
            stream.get_final_message()
        assert flush(10)
        samples = scrape(s.url)
        oai.close()
        ant.close()
    o, st, a, d = OPENAI_CHAT_USAGE, OPENAI_STREAM_USAGE, ANTHROPIC_USAGE, ANTHROPIC_DELTA_USAGE
    expected_input = (
        o["prompt_tokens"] + st["prompt_tokens"]
        + a["input_tokens"] + a["cache_read_input_tokens"]
        + d["input_tokens"] + d["cache_creation_input_tokens"]
    )  # fmt: skip
    expected_output = (
        o["completion_tokens"] + st["completion_tokens"] + a["output_tokens"] + d["output_tokens"]
    )
    tokens = totals(samples, "ai_tokens_total", "type")
    # Every other kind the exporter counts (TOKEN_TYPES) is 0 here.
    assert tokens == {
        **dict.fromkeys(TOKEN_TYPES, 0),
        "input": expected_input,
        "output": expected_output,
        "total": expected_input + expected_output,
        "cached_input": 1920 + a["cache_read_input_tokens"],
        "cache_write": d["cache_creation_input_tokens"],
    }
    assert set(tokens) == set(TOKEN_TYPES)
    # Five calls, the abandoned stream counted once.
    assert sum(totals(samples, "ai_requests_total", "provider").values()) == 5
    assert totals(samples, "ai_requests_total", "provider") == {"openai": 3, "anthropic": 2}


def test_track_token_usage_as_written_sync_and_async(tmp_path: Path) -> None:
    import asyncio

    from ai_usage_exporter import (
        OPERATION_QUERY,
        TOKEN_TYPE_LLM,
        track_token_usage,
        track_token_usage_sync,
    )

    tenant_id, operation_id, retry_count, i, o = "acme", "op-1", 0, 120, 30
    n = i + o
    with server_process(tmp_path / "ledger.db") as s:
        configure(url=s.url)
        asyncio.run(
            track_token_usage(tenant_id=tenant_id, tokens=n, model="llama3-70b-8192",
                              token_type=TOKEN_TYPE_LLM, operation=OPERATION_QUERY,
                              idempotency_key=f"{operation_id}_{tenant_id}_{retry_count}",
                              metadata={"provider": "groq", "input_tokens": i, "output_tokens": o})
        )  # fmt: skip
        # The same key again (a retried job): counted once.
        track_token_usage_sync(tenant_id=tenant_id, tokens=n, model="llama3-70b-8192",
                               token_type=TOKEN_TYPE_LLM, operation=OPERATION_QUERY,
                               idempotency_key=f"{operation_id}_{tenant_id}_{retry_count}",
                               metadata={"provider": "groq", "input_tokens": i, "output_tokens": o})  # fmt: skip
        assert flush(10)
        view = httpx.get(f"{s.url}/api/metrics").json()
    assert view["exporter"]["events_accepted"] == 1
    assert view["exporter"]["events_duplicate"] == 1
    assert view["totals"]["tokens"]["input_tokens"] == 120
    assert view["totals"]["tokens"]["output_tokens"] == 30
    assert view["by_tenant"][0]["tenant"] == "acme"


def test_raise_budget_stops_the_call_and_the_gauges_show_it(provider: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "budgets:\n"
        "  - {name: acme-daily, scope: tenant, match: acme, tokens: 3000, usd: 100, period: day}\n"
    )
    per_call = OPENAI_CHAT_USAGE["total_tokens"]
    with server_process(tmp_path / "ledger.db", args=["--config", str(config)]) as s:
        budget = Budget("tenant", match="acme", tokens=3000, period="day", on_exceed="raise")
        configure(url=s.url, budgets=[budget])
        client = instrument(openai.OpenAI(base_url=f"{provider}/v1", api_key="k", max_retries=0))
        with usage_context(tenant="acme"):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # 2306 of 3000
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # crosses 3000
            with pytest.raises(BudgetExceeded) as info:
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert (info.value.budget, info.value.key, info.value.unit) == (
            "tenant:acme:day",
            "acme",
            "tokens",
        )
        assert info.value.used == 2 * per_call
        # Another tenant has its own (unused) budget key; the call goes through.
        with usage_context(tenant="globex"):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.close()
        assert flush(10)
        samples = scrape(s.url)
        labels = frozenset(
            {
                "budget": "acme-daily",
                "scope": "tenant",
                "key": "acme",
                "period": "day",
                "unit": "tokens",
            }.items()
        )
        assert samples[("ai_budget_limit", labels)] == 3000
        assert samples[("ai_budget_used", labels)] == 2 * per_call
        assert samples[("ai_budget_remaining", labels)] == 0
        assert samples[("ai_budget_hours_to_exhaustion", labels)] == 0
        view = httpx.get(f"{s.url}/api/metrics").json()
        (tokens_row,) = [r for r in view["budgets"] if r["unit"] == "tokens"]
        assert tokens_row["used"] == 2 * per_call and tokens_row["remaining"] == 0
        # A restarted app reads the sidecar's sums: the budget is still used up.
        reset_sdk()
        configure(
            url=s.url, budgets=[Budget("tenant", match="acme", tokens=3000, on_exceed="raise")]
        )
        with usage_context(tenant="acme"), pytest.raises(BudgetExceeded):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.close()


def test_sidecar_down_then_back_delivers_everything_once(tmp_path: Path) -> None:
    from ai_usage_exporter import track_token_usage_sync

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    configure(url=url)
    for k in range(20):
        track_token_usage_sync(
            tenant_id="t",
            model="gpt-4o-mini",
            metadata={"provider": "openai", "input_tokens": k, "output_tokens": 1},
        )
    assert flush(0.3) is False  # nothing can be acknowledged while the sidecar is down
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ai_usage_exporter", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--db", str(tmp_path / "ledger.db")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        wait_healthy(url, None)
        assert flush(30)
        view = httpx.get(f"{url}/api/metrics").json()
    finally:
        proc.kill()
        proc.wait(10)
    assert view["totals"]["requests"] == 20
    assert view["totals"]["tokens"]["input_tokens"] == sum(range(20))
    assert view["exporter"]["events_duplicate"] == 0
