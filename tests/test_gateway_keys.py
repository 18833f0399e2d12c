"""Gateway keys end to end: real OpenAI and Anthropic SDKs, the real sidecar, a fake upstream.

Keys are made with the real CLI (`main(["keys", ...])`) in the same ledger the
sidecar serves from; SQLite here, PostgreSQL and Redis for the fleet tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from _fake_upstream import FakeUpstream, fake_upstream
from _pg import fresh_schema
from _redis import redis_url, unique_prefix
from _server import SampleKey, free_port, scrape, serve_app
from ai_usage_exporter.cli.main import main
from ai_usage_exporter.config.gateway import parse_gateway
from ai_usage_exporter.core.events.model import UsageEvent
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.gateway.calllog import CallLogger
from ai_usage_exporter.gateway.proxy import Gateway
from ai_usage_exporter.recorder.recorder import Recorder
from ai_usage_exporter.server import create_app

OPENAI_KEY = "sk-proj-openaiTESTKEY0123456789abcdef"
CLIENT_TOKEN = "gw-client-token-1"
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hi"}],
}
# What the fake upstream answers (tests/fixtures/gateway): this model, 10 in, 5 out.
SERVED_MODEL = "gpt-3.5-turbo-0125"
CALL_COST = PriceBook().price(UsageEvent("openai", SERVED_MODEL, input_tokens=10, output_tokens=5))
CALL_NUSD = round(CALL_COST.total * 1_000_000_000)


def create_key(db: str, name: str, *flags: str) -> str:
    """`keys create` through the real CLI; the secret it printed once."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["keys", "create", "--name", name, *flags, "--db", db, "--format", "json"])
    assert code == 0
    body = orjson.loads(out.getvalue())
    assert body["name"] == name
    secret: str = body["key"]
    return secret


def keys_cli(db: str, *args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main(["keys", *args, "--db", db])


@dataclass
class Sidecar:
    url: str
    recorder: Recorder
    gateway: Gateway
    log: io.StringIO
    upstream: FakeUpstream
    clients: list[Any] = field(default_factory=list)

    def sdk(self, api_key: str, **headers: str) -> OpenAI:
        client = OpenAI(
            base_url=self.url + "/v1",
            api_key=api_key,
            max_retries=0,
            timeout=10,
            default_headers=headers or None,
        )
        self.clients.append(client)
        return client

    def claude(self, api_key: str) -> anthropic.Anthropic:
        client = anthropic.Anthropic(base_url=self.url, api_key=api_key, max_retries=0, timeout=10)
        self.clients.append(client)
        return client

    def samples(self) -> dict[SampleKey, float]:
        self.recorder.flush(10)
        return scrape(self.url)

    def wait_events(self, n: int) -> None:
        deadline = time.monotonic() + 10
        while self.recorder.ledger.count_events() < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {n} events within 10 s")
            self.recorder.flush(10)
            time.sleep(0.01)


def _config(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "openai": {
                "provider": "openai",
                "base_url": upstream.url + "/v1",
                "api_key_env": "OPENAI_API_KEY",
            }
        },
        "routes": {"openai": {"upstreams": ["openai"]}, "batch": {"upstreams": ["openai"]}},
        "default_route": "openai",
        "client_tokens": [CLIENT_TOKEN],
        "key_cache_s": 0.2,
        **extra,
    }


@contextlib.contextmanager
def sidecar(
    db: str,
    upstream: FakeUpstream,
    *,
    clock: Callable[[], float] | None = None,
    instance: str | None = None,
    extra_labels: tuple[str, ...] = (),
    **extra: Any,
) -> Iterator[Sidecar]:
    config = parse_gateway(_config(upstream, **extra), "test")
    recorder = Recorder(db, instance=instance, extra_labels=extra_labels)
    log = io.StringIO()
    keys = {"openai": OPENAI_KEY}
    logger = CallLogger(log, level="debug", detailed=True, secrets=keys.values())
    gateway = Gateway(config, recorder, keys=keys, logger=logger, clock=clock)
    app = create_app(
        recorder, gateway=gateway, gateway_tokens=config.client_tokens, close_recorder=True
    )
    with serve_app(app) as url:
        side = Sidecar(url, recorder, gateway, log, upstream)
        try:
            yield side
        finally:
            for c in side.clients:
                c.close()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream("openai") as up:
        yield up


def _rejected(s: dict[SampleKey, float], reason: str) -> float:
    return s.get(("ai_gateway_rejected_total", frozenset({("reason", reason)})), 0.0)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _day_start(ts: float) -> float:
    return ts - ts % 86400


# ---------------------------------------------------------------- attribution


def test_two_keys_are_attributed_exactly_whatever_the_client_claims(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    db = str(tmp_path / "gw.db")
    key_a = create_key(db, "team-a", "--tenant", "acme", "--user", "alice")
    key_b = create_key(db, "svc-b", "--tenant", "beta", "--service", "billing")
    with sidecar(db, upstream, extra_labels=("key",)) as side:
        # The client claims another tenant and user: kept in metadata only.
        a = side.sdk(key_a, **{"X-Tenant": "forged"})
        a.chat.completions.create(**CHAT_BODY, user="mallory")
        a.chat.completions.create(**CHAT_BODY, stream=True).close()
        # Anthropic's SDK authenticates with x-api-key; on the OpenAI-compatible path.
        reply = side.claude(key_b).post("/v1/chat/completions", cast_to=object, body=CHAT_BODY)
        assert isinstance(reply, dict) and reply["model"] == SERVED_MODEL
        side.wait_events(3)
        rows = side.recorder.ledger.events()
        got = sorted(
            [(r["key"], r["tenant"], r["user"], r["service"],
              orjson.loads(r["metadata"]).get("client_tenant"),
              orjson.loads(r["metadata"]).get("client_user")) for r in rows],
            key=repr,
        )  # fmt: skip
        assert got == [
            ("svc-b", "beta", None, "billing", None, None),
            ("team-a", "acme", "alice", "openai", "forged", "mallory"),
            ("team-a", "acme", "alice", "openai", "forged", None),
        ]
        s = side.samples()
        labels = {"service": "openai", "provider": "openai", "model": SERVED_MODEL,
                  "operation": "chat", "status": "ok", "key": "team-a"}  # fmt: skip
        assert s[("ai_requests_total", frozenset(labels.items()))] == 2
        labels.update(service="billing", key="svc-b")
        assert s[("ai_requests_total", frozenset(labels.items()))] == 1
        view = httpx.get(side.url + "/api/metrics").json()
        assert [(r["key"], r["requests"]) for r in view["by_key"]] == [("team-a", 2), ("svc-b", 1)]
        report = httpx.get(side.url + "/api/reports/keys?format=json").json()
        assert [(r["key"], r["requests"], r["input_tokens"]) for r in report["rows"]] == [
            ("team-a", 2, 20),
            ("svc-b", 1, 10),
        ]
        # A static client token still works, and records no key.
        side.sdk(CLIENT_TOKEN).chat.completions.create(**CHAT_BODY)
        side.wait_events(4)
        assert side.recorder.ledger.events()[-1]["key"] is None


# ---------------------------------------------------------------- budgets


def test_budget_refuses_once_spent_after_a_restart_too_and_resets_next_period(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    db = str(tmp_path / "gw.db")
    budget = f"{2 * CALL_NUSD / 1e9:.9f}"
    key = create_key(db, "capped", "--budget-usd", budget, "--period", "day")
    other = create_key(db, "free")
    now = [time.time()]
    resets = _day_start(now[0]) + 86400
    expected = {
        "message": f"gateway key 'capped' has used its daily budget: "
        f"${2 * CALL_NUSD / 1e9:.6f}".rstrip("0")
        + f" of ${2 * CALL_NUSD / 1e9:.6f}".rstrip("0")
        + f"; it resets at {_iso(resets)}",
        "type": "rate_limit_exceeded",
        "param": None,
        "code": "budget",
        "key": "capped",
        "unit": "usd",
        "used": 2 * CALL_NUSD / 1e9,
        "limit": 2 * CALL_NUSD / 1e9,
        "resets_at": _iso(resets),
    }
    with sidecar(db, upstream, clock=lambda: now[0]) as side:
        client = side.sdk(key)
        client.chat.completions.create(**CHAT_BODY)
        client.chat.completions.create(**CHAT_BODY)
        side.wait_events(2)
        sent = len(upstream.requests)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(**CHAT_BODY)
        body = info.value.response.json()["error"]
        assert body.pop("retry_after_s") == round(resets - now[0], 3)
        assert body == expected
        assert info.value.response.headers["retry-after"] == str(int(resets - now[0]) + 1)
        assert len(upstream.requests) == sent  # refused before it went upstream
        side.sdk(other).chat.completions.create(**CHAT_BODY)  # another key is not affected
        s = side.samples()
        assert _rejected(s, "budget") == 1
        gauge = {("budget", "capped"), ("scope", "key"), ("key", "capped"), ("period", "day"),
                 ("unit", "usd")}  # fmt: skip
        assert s[("ai_budget_used", frozenset(gauge))] == 2 * CALL_NUSD / 1e9
        assert s[("ai_budget_remaining", frozenset(gauge))] == 0
    # A restart on the same ledger reads the spend back.
    with sidecar(db, upstream, clock=lambda: now[0]) as side:
        with pytest.raises(openai.RateLimitError) as info:
            side.sdk(key).chat.completions.create(**CHAT_BODY)
        assert info.value.response.json()["error"]["code"] == "budget"
        now[0] = resets + 1  # the next day
        reply = side.sdk(key).chat.completions.create(**CHAT_BODY)
        assert reply.model == SERVED_MODEL


# ---------------------------------------------------------------- rate limits


def test_a_key_over_its_rpm_gets_429_with_retry_after(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    db = str(tmp_path / "gw.db")
    key = create_key(db, "slow", "--rpm", "2")
    with sidecar(db, upstream) as side:
        client = side.sdk(key)
        client.chat.completions.create(**CHAT_BODY)
        client.chat.completions.create(**CHAT_BODY)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(**CHAT_BODY)
        r = info.value.response
        assert r.headers["retry-after"] == "30"
        body = r.json()["error"]
        assert (body["code"], body["unit"], body["limit"], body["key"]) == (
            "rate_limit", "requests_per_minute", 2.0, "slow",
        )  # fmt: skip
        assert body["message"].startswith(
            "gateway key 'slow' is over its limit of 2 requests per minute; retry in"
        )
        assert _rejected(side.samples(), "rate_limit") == 1


def test_limits_are_shared_through_redis_across_two_sidecars(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    url = redis_url()
    db = str(tmp_path / "gw.db")
    key = create_key(db, "fleet", "--rpm", "3")
    limits = {"redis": url, "prefix": unique_prefix()}
    with (
        sidecar(db, upstream, rate_limits=limits) as one,
        sidecar(db, upstream, rate_limits=limits) as two,
    ):
        one.sdk(key).chat.completions.create(**CHAT_BODY)
        two.sdk(key).chat.completions.create(**CHAT_BODY)
        one.sdk(key).chat.completions.create(**CHAT_BODY)
        for side in (two, one):
            with pytest.raises(openai.RateLimitError) as info:
                side.sdk(key).chat.completions.create(**CHAT_BODY)
            assert info.value.response.json()["error"]["code"] == "rate_limit"
            assert info.value.response.headers["retry-after"] == "20"


def test_redis_down_fails_open_by_default_and_closed_when_configured(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    db = str(tmp_path / "gw.db")
    key = create_key(db, "k", "--rpm", "1")
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with sidecar(db, upstream, rate_limits={"redis": nowhere}) as side:
        for _ in range(3):
            side.sdk(key).chat.completions.create(**CHAT_BODY)
        s = side.samples()
        errors = {("outcome", "fail_open")}
        assert s[("ai_gateway_rate_limiter_errors_total", frozenset(errors))] == 3
    with sidecar(db, upstream, rate_limits={"redis": nowhere, "on_redis_error": "closed"}) as side:
        with pytest.raises(openai.InternalServerError) as info:
            side.sdk(key).chat.completions.create(**CHAT_BODY)
        assert info.value.response.status_code == 503
        assert info.value.response.json()["error"]["code"] == "rate_limiter_unavailable"


# ---------------------------------------------------------------- a fleet on PostgreSQL


def test_a_revoked_key_is_refused_by_a_second_sidecar_on_the_same_postgres(
    upstream: FakeUpstream,
) -> None:
    with fresh_schema() as pg:
        key = create_key(pg, "shared", "--budget-usd", f"{CALL_NUSD / 1e9:.9f}")
        other = create_key(pg, "other")
        with (
            sidecar(pg, upstream, instance="pod-1") as one,
            sidecar(pg, upstream, instance="pod-2") as two,
        ):
            two.sdk(other).chat.completions.create(**CHAT_BODY)
            # Spend on one sidecar counts on the other: the budget is one call.
            one.sdk(key).chat.completions.create(**CHAT_BODY)
            one.wait_events(2)
            with pytest.raises(openai.RateLimitError) as info:
                two.sdk(key).chat.completions.create(**CHAT_BODY)
            assert info.value.response.json()["error"]["code"] == "budget"
            assert keys_cli(pg, "revoke", "other") == 0
            deadline = time.monotonic() + 5
            while True:
                try:
                    two.sdk(other).chat.completions.create(**CHAT_BODY)
                except openai.AuthenticationError as exc:
                    message = exc.response.json()["error"]["message"]
                    assert message.startswith("gateway key 'other' was revoked at ")
                    break
                assert time.monotonic() < deadline, "revoke not seen within 5 s"
                time.sleep(0.05)
            assert _rejected(two.samples(), "unauthorized") == 1


# ---------------------------------------------------------------- the secret stays secret


def test_keys_never_reach_logs_ledger_rows_responses_or_upstreams(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    db = str(tmp_path / "gw.db")
    key = create_key(db, "quiet", "--models", "gpt-4o*")
    seen: list[bytes] = []
    with sidecar(db, upstream) as side:
        client = side.sdk(key)
        raw = client.chat.completions.with_raw_response.create(**CHAT_BODY)
        seen += [raw.http_response.content, orjson.dumps(dict(raw.headers))]
        with client.chat.completions.with_streaming_response.create(**CHAT_BODY, stream=True) as s:
            seen += [s.read(), orjson.dumps(dict(s.headers))]
        for body in ({**CHAT_BODY, "model": "o3"}, CHAT_BODY):
            r = httpx.post(side.url + "/v1/chat/completions", json=body,
                           headers={"x-api-key": key, "x-goog-api-key": key})  # fmt: skip
            seen += [r.content, orjson.dumps(dict(r.headers))]
        assert r.status_code == 200
        assert (
            httpx.get(
                side.url + "/v1/models", headers={"authorization": f"Bearer {key}"}
            ).status_code
            == 200
        )
        side.wait_events(3)
        logged = side.log.getvalue()
    assert '"gateway call"' in logged and '"key":"quiet"' in logged
    for request in upstream.requests:
        seen.append(orjson.dumps(request, default=str))
    with sqlite3.connect(db) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            seen += [orjson.dumps(row, default=str) for row in conn.execute(f"SELECT * FROM {t}")]
        (stored,) = conn.execute("SELECT key_hash, key_prefix FROM gateway_keys").fetchall()
    assert stored == (hashlib.sha256(key.encode()).hexdigest(), key[:8])
    secret = key[8:].encode()  # past the prefix `keys list` shows
    assert len(upstream.requests) == 4
    leaks = [s for s in [*seen, logged.encode()] if secret in s]
    assert leaks == []


# ---------------------------------------------------------------- refusals


def test_refusals_name_the_problem_in_openai_shape(tmp_path: Path, upstream: FakeUpstream) -> None:
    db = str(tmp_path / "gw.db")
    key = create_key(db, "narrow", "--routes", "batch", "--models", "gpt-4o-mini",
                     "--config", _config_file(tmp_path, upstream))  # fmt: skip
    expired = create_key(db, "old", "--expires", "1h")
    now = [time.time()]
    with sidecar(db, upstream, clock=lambda: now[0]) as side:

        def post(path: str, token: str | None, model: str = "gpt-4o-mini") -> httpx.Response:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return httpx.post(side.url + path, json={**CHAT_BODY, "model": model}, headers=headers)

        cases = [
            (post("/v1/chat/completions", None), 401, "unauthorized",
             "this gateway needs a key: send Authorization: Bearer <key> (a gateway key made with "
             "`ai-usage-exporter keys create`, or a client token)"),
            (post("/v1/chat/completions", "aue_short"), 401, "unauthorized",
             "malformed gateway key 'aue_shor…' (9 characters): a key is 'aue_' followed by 43 "
             "letters, digits, '-' or '_', as `ai-usage-exporter keys create` printed it"),
            (post("/v1/chat/completions", "aue_" + "x" * 43), 401, "unauthorized",
             "unknown gateway key 'aue_xxxx…'"),
            (post("/v1/chat/completions", "not-a-token"), 401, "unauthorized",
             "the bearer token is not a valid client token or gateway key"),
            (post("/v1/chat/completions", key), 403, "route_not_allowed",
             "gateway key 'narrow' may not use route 'openai'; allowed: batch"),
            (post("/api/ai/batch/chat/completions", key, "gpt-4o"), 403, "model_not_allowed",
             "gateway key 'narrow' may not use model 'gpt-4o'; allowed: gpt-4o-mini"),
        ]  # fmt: skip
        for r, status, code, message in cases:
            assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["message"]) == (
                status, code, message,
            )  # fmt: skip
        assert cases[0][0].headers["www-authenticate"] == 'Bearer realm="ai-usage-exporter"'
        assert post("/api/ai/batch/chat/completions", key).status_code == 200
        assert post("/v1/chat/completions", expired).status_code == 200
        now[0] += 7200
        r = post("/v1/chat/completions", expired)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "expired")
        assert r.json()["error"]["message"].startswith("gateway key 'old' expired at ")
        s = side.samples()
        assert [_rejected(s, reason) for reason in ("unauthorized", "route_not_allowed",
                "model_not_allowed", "expired", "budget")] == [4, 1, 1, 1, 0]  # fmt: skip


def _config_file(tmp_path: Path, upstream: FakeUpstream) -> str:
    path = tmp_path / "config.yml"
    path.write_text(orjson.dumps({"gateway": _config(upstream)}).decode())
    return str(path)


def test_cli_bad_input_names_the_value(
    tmp_path: Path, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "gw.db")
    config = _config_file(tmp_path, upstream)
    cases = [
        (["--budget-usd", "-5"], "--budget-usd: expected a non-negative amount of US dollars, got '-5'"),
        (["--budget-tokens", "-1"], "--budget-tokens: expected a non-negative whole number, got '-1'"),
        (["--rpm", "0"], "--rpm: expected a positive whole number, got '0'"),
        (["--routes", "openai,nope", "--config", config],
         "--routes: unknown route 'nope'; the gateway's routes are: openai, batch"),
        (["--expires", "2001-01-01"], "--expires: '2001-01-01' is in the past"),
    ]  # fmt: skip
    for flags, message in cases:
        assert main(["keys", "create", "--name", "k", *flags, "--db", db]) == 2
        assert capsys.readouterr().err == f"ai-usage-exporter keys: {message}\n"
    with pytest.raises(SystemExit) as info:
        main(["keys", "create", "--name", "k", "--budget", "5", "--db", db])
    assert info.value.code == 2
    assert "unrecognized arguments: --budget 5" in capsys.readouterr().err
    assert main(["keys", "revoke", "ghost", "--db", db]) == 2
    assert "no key named 'ghost'" in capsys.readouterr().err
    assert main(["keys", "list", "--db", db, "--format", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == []  # nothing was written


def test_keys_list_update_rotate_and_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "gw.db")
    first = create_key(db, "rot", "--budget-tokens", "1000", "--rpm", "5")
    assert main(["keys", "update", "rot", "--rotate", "--rpm", "none", "--db", db,
                 "--format", "json"]) == 0  # fmt: skip
    rotated = orjson.loads(capsys.readouterr().out)
    assert rotated["key"] != first and rotated["key"].startswith("aue_")
    assert (rotated["rpm"], rotated["budget_tokens"]) == (None, 1000)
    assert main(["keys", "revoke", "rot", "--db", db]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--db", db, "--format", "json"]) == 0
    (listed,) = orjson.loads(capsys.readouterr().out)
    assert listed["status"] == "revoked" and "key" not in listed and "key_hash" not in listed
    assert listed["key_prefix"] == rotated["key"][:8] + "…"
    assert (listed["used_tokens"], listed["budget"]) == (0, "1000 tokens/month")
