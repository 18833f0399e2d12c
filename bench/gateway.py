"""What the gateway adds: latency, throughput and time to first token, against the upstream direct.

Run from the repository root: ``python3 -m bench.gateway`` (``--smoke`` for a quick check).

Three processes on 127.0.0.1, plus the load generator in a fourth:

- the upstream: a minimal Starlette app on the sidecar's uvicorn settings that answers
  ``POST /v1/chat/completions`` with a recorded OpenAI completion, or streams the
  recorded OpenAI chunk stream (tests/fixtures/gateway) event by event, and
  ``POST /v1/messages`` the same way with a recorded Anthropic message and
  anthropic-sdk-python's recorded stream (tests/fixtures/streams);
- the sidecar, ``python3 -m ai_usage_exporter serve`` with a ``gateway:`` section whose
  one upstream is that app (a client token, a provider key from the environment, call
  logs at info to a file, every call recorded in SQLite with synchronous=full);
- the load generator: an asyncio HTTP/1.1 keep-alive client written for this (httpx
  would cost more than the thing measured). Each request's latency is send -> last
  body byte; time to first token is send -> first body chunk.

The same load runs against the upstream directly and through the gateway, plain and
streamed, for OpenAI Chat Completions and Anthropic Messages (``APIS``): once with 1
client (added p50 latency and TTFT with nothing queued) and once with 32 concurrent
clients (throughput, and p50 under that load). Targets from the issue: added p50 latency <= 1 ms, throughput >= 0.5x of direct at 32 clients, added
time to first token <= 1 ms.

The gateway runs with a gateway key (``keys create``) whose dollar budget, RPM and
TPM limits are all enforced on every call (set high enough never to refuse one), so
the figures include admission: key lookup, budget check, rate-limit check, charge.

LiteLLM's proxy (``litellm[proxy]``, installed in the side venv ``.bench-venv``; it is
not a dependency) runs in the same run against the same upstream, on the OpenAI Chat
Completions rows only, with its master key (its virtual keys, budgets and limits need
its PostgreSQL schema and Prisma, which cannot be set up offline here, so LiteLLM does
less work per call than we do). Targets from issue 21: our added p50 <= 0.25x LiteLLM's,
our throughput >= 4x, our RSS <= 0.5x. The side venv is ``$BENCH_LITELLM_VENV`` if set,
else ``.bench-venv`` in this checkout, else the first ``.bench-venv`` in another git
worktree of the repository (it is untracked, so one is made per machine, not per
worktree). Without one the LiteLLM column is skipped with a message saying so; ``--smoke``
always skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ._harness import machine, verdict
from .ingest import free_port, stop, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "gateway"
KEY = "sk-bench-0123456789abcdef"
TOKEN = "bench-client-token"
TARGET_ADDED_P50_MS = 1.0
TARGET_THROUGHPUT = 0.5
TARGET_ADDED_TTFT_MS = 1.0
TARGET_VS_LITELLM_P50 = 0.25
TARGET_VS_LITELLM_RPS = 4.0
TARGET_VS_LITELLM_RSS = 0.5
LITELLM_KEY = "sk-litellm-bench-master"


# ---------------------------------------------------------------- the upstream


def serve_upstream(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    stream = (FIXTURES / "openai_chat_stream_include_usage.sse").read_bytes()
    events = [e + b"\n\n" for e in stream.split(b"\n\n") if e]
    plain = orjson.dumps(
        {
            "id": "chatcmpl-CVFjOTBIgA3kuQLnIXXxtg7Ge7hbs",
            "object": "chat.completion",
            "created": 1761564674,
            "model": "gpt-3.5-turbo-0125",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi, how are you?"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )

    anthropic_plain = (FIXTURES / "anthropic_tool_use.json").read_bytes()
    anthropic_stream = (
        ROOT / "tests" / "fixtures" / "streams" / "anthropic_sdk_basic.sse"
    ).read_bytes()
    anthropic_events = [e + b"\n\n" for e in anthropic_stream.split(b"\n\n") if e]

    async def events_iter(events: list[bytes] = events) -> AsyncIterator[bytes]:
        for e in events:
            yield e

    async def messages(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("stream"):
            return StreamingResponse(events_iter(anthropic_events), media_type="text/event-stream")
        return Response(anthropic_plain, media_type="application/json")

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("stream"):
            return StreamingResponse(events_iter(), media_type="text/event-stream")
        return Response(plain, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            server_header=False,
        )
    ).run()


# ---------------------------------------------------------------- the load generator


async def _connection(
    port: int, request: bytes, deadline: float, latencies: list[float], ttfts: list[float]
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            first: float | None = None
            if b"content-length:" in lower:
                n = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(n)
                first = time.perf_counter()
            else:  # chunked
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    if first is None:
                        first = time.perf_counter()
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            t1 = time.perf_counter()
            if head[9:10] != b"2":
                errors += 1
                continue
            latencies.append(t1 - t0)
            ttfts.append(first - t0)
    finally:
        writer.close()
    return errors


# Each wire API's path, and its header lines with `{token}` for the client's secret.
APIS = {
    "openai": ("/v1/chat/completions", "Authorization: Bearer {token}"),
    "anthropic": ("/v1/messages", "x-api-key: {token}\r\nanthropic-version: 2023-06-01"),
}


async def _load(
    port: int, api: str, stream: bool, clients: int, seconds: float, token: str = TOKEN
) -> dict[str, float]:
    path, auth_lines = APIS[api]
    auth = auth_lines.format(token=token)
    payload: dict[str, Any] = {
        "model": "gpt-3.5-turbo-0125" if api == "openai" else "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Say hi"}],
        "stream": stream,
    }
    if api == "anthropic":
        payload["max_tokens"] = 1024
    body = orjson.dumps(payload)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    ttfts: list[float] = []
    # Warm every connection (and, through the gateway, as many pooled upstream ones) and
    # the servers' caches with the same load before timing.
    warm: list[float] = []
    warm_until = time.perf_counter() + min(1.0, seconds / 5)
    await asyncio.gather(
        *(_connection(port, request, warm_until, warm, []) for _ in range(clients))
    )
    start = time.perf_counter()
    deadline = start + seconds
    errors = sum(
        await asyncio.gather(
            *(_connection(port, request, deadline, latencies, ttfts) for _ in range(clients))
        )
    )
    elapsed = time.perf_counter() - start
    return {
        "warmup_requests": len(warm),
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": sorted(latencies)[int(len(latencies) * 0.99)] * 1000,
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (VmRSS from /proc), in KiB."""
    total = 0
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            with open(f"/proc/{p}/status", encoding="ascii") as f:
                total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children", encoding="ascii") as f:
                pending.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration):
            continue
    return total


def run_load(
    port: int,
    api: str,
    stream: bool,
    clients: int,
    seconds: float,
    server: int,
    token: str = TOKEN,
) -> dict[str, float]:
    """Run the generator in its own process, so it shares no interpreter with a server.

    Also the CPU time the `server` process spent per request: what it would serve on
    a core of its own, whatever else the machine was doing.
    """
    cpu0 = cpu_seconds(server)
    out = subprocess.run(
        [sys.executable, "-m", "bench.gateway", "--role", "load", "--port", str(port),
         "--api", api, "--clients", str(clients), "--seconds", str(seconds), "--token", token]
        + (["--stream"] if stream else []),
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=seconds + 120,
    ).stdout  # fmt: skip
    result: dict[str, float] = orjson.loads(out)
    served = result["requests"] + result["warmup_requests"]
    result["cpu_us_per_request"] = (cpu_seconds(server) - cpu0) / served * 1e6
    return result


def find_litellm() -> Path | None:
    """The side venv's ``litellm`` (see the module's docstring for where it is looked for)."""
    venvs = [Path(v) for v in [os.environ.get("BENCH_LITELLM_VENV", "")] if v]
    venvs.append(ROOT / ".bench-venv")
    try:
        out = subprocess.run(
            ["git", "worktree", "list", "--porcelain"],
            cwd=ROOT, capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        out = ""
    venvs += [Path(ln[9:]) / ".bench-venv" for ln in out.splitlines() if ln.startswith("worktree ")]
    return next((v / "bin" / "litellm" for v in venvs if (v / "bin" / "litellm").exists()), None)


# ---------------------------------------------------------------- running it


@dataclass
class Pair:
    direct: dict[str, float]
    gateway: dict[str, float]
    litellm: dict[str, float] | None = None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--smoke", action="store_true", help="a tiny run that only checks the script works"
    )
    p.add_argument("--role", choices=["main", "upstream", "load"], default="main")
    p.add_argument("--port", type=int)
    p.add_argument("--api", choices=sorted(APIS), default="openai")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--token", default=TOKEN)
    p.add_argument(
        "--no-keys",
        action="store_true",
        help="our gateway with a static client token instead of a key (what admission costs)",
    )
    p.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM column")
    args = p.parse_args(argv)
    if args.role == "upstream":
        serve_upstream(args.port)
        return 0
    if args.role == "load":
        # The same cheap event loop the servers use, so the generator takes less of the CPU.
        run: Callable[[Coroutine[Any, Any, dict[str, float]]], dict[str, float]] = asyncio.run
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            pass
        result = run(
            _load(args.port, args.api, args.stream, args.clients, args.seconds, args.token)
        )
        print(orjson.dumps(result).decode())
        return 0

    seconds = 0.5 if args.smoke else args.seconds
    concurrency = (1, 4) if args.smoke else (1, 32)
    litellm_bin = None if args.smoke or args.no_litellm else find_litellm()
    if args.no_litellm:
        print("LiteLLM column skipped (--no-litellm)")
    elif args.smoke:
        print("LiteLLM column skipped in --smoke (its proxy takes a minute to start)")
    elif litellm_bin is None:
        print(f"LiteLLM column skipped: no side venv ($BENCH_LITELLM_VENV, {ROOT / '.bench-venv'} "
              "or another worktree's; make it with `python3 -m venv .bench-venv && "
              ".bench-venv/bin/pip install 'litellm[proxy]'`)")  # fmt: skip
    else:
        print(f"LiteLLM proxy from the side venv {litellm_bin.parent.parent}")
    with tempfile.TemporaryDirectory() as tmp:
        up_port, gw_port, ll_port = free_port(), free_port(), free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "bench.gateway", "--role", "upstream", "--port", str(up_port)],
            cwd=ROOT,
        )
        config = Path(tmp) / "gw.yaml"
        config.write_text(
            "gateway:\n  upstreams:\n    openai: {provider: openai, "
            f"base_url: 'http://127.0.0.1:{up_port}/v1', api_key_env: OPENAI_API_KEY}}\n"
            "    anthropic: {provider: anthropic, api: anthropic, "
            f"base_url: 'http://127.0.0.1:{up_port}', api_key_env: ANTHROPIC_API_KEY}}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")} | {
            "OPENAI_API_KEY": KEY,
            "ANTHROPIC_API_KEY": KEY,
            "AI_USAGE_EXPORTER_GATEWAY_TOKEN": TOKEN,
        }
        db = str(Path(tmp) / "bench.db")
        # Every limit enforced on every call, none ever reached.
        made = subprocess.run(
            [sys.executable, "-m", "ai_usage_exporter", "keys", "create", "--name", "bench",
             "--tenant", "bench", "--budget-usd", "1000000", "--budget-tokens", "1000000000000",
             "--rpm", "100000000", "--tpm", "1000000000000", "--db", db, "--format", "json"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        gateway_key: str = TOKEN if args.no_keys else orjson.loads(made.stdout)["key"]
        log = open(Path(tmp) / "sidecar.log", "wb")  # noqa: SIM115 - closed below
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "ai_usage_exporter", "serve", "--port", str(gw_port),
             "--db", db, "--config", str(config)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        litellm: subprocess.Popen[bytes] | None = None
        if litellm_bin is not None:
            ll_config = Path(tmp) / "litellm.yaml"
            ll_config.write_text(
                "model_list:\n  - model_name: gpt-3.5-turbo-0125\n    litellm_params:\n"
                "      model: openai/gpt-3.5-turbo-0125\n"
                f"      api_base: http://127.0.0.1:{up_port}/v1\n      api_key: {KEY}\n"
                f"general_settings:\n  master_key: {LITELLM_KEY}\n"
                "litellm_settings:\n  telemetry: false\n"
            )
            ll_log = open(Path(tmp) / "litellm.log", "wb")  # noqa: SIM115 - closed below
            litellm = subprocess.Popen(
                [str(litellm_bin), "--config", str(ll_config), "--host", "127.0.0.1",
                 "--port", str(ll_port)],
                cwd=tmp, stdout=ll_log, stderr=subprocess.STDOUT,
                env={**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
            )  # fmt: skip
        try:
            wait_healthy(f"http://127.0.0.1:{up_port}/healthz", upstream)
            wait_healthy(f"http://127.0.0.1:{gw_port}/healthz", sidecar)
            if litellm is not None:
                wait_healthy(f"http://127.0.0.1:{ll_port}/health/liveliness", litellm, 600.0)
            results: dict[tuple[str, bool, int], Pair] = {}
            for api in APIS:
                for stream in (False, True):
                    for clients in concurrency:
                        results[(api, stream, clients)] = Pair(
                            run_load(up_port, api, stream, clients, seconds, upstream.pid),
                            run_load(gw_port, api, stream, clients, seconds, sidecar.pid,
                                     gateway_key),
                            # LiteLLM beside ours on the OpenAI path it serves natively.
                            run_load(ll_port, api, stream, clients, seconds, litellm.pid,
                                     LITELLM_KEY)
                            if litellm is not None and api == "openai" else None,
                        )  # fmt: skip
            rss = {"gateway": rss_kib(sidecar.pid)}
            if litellm is not None:
                rss["litellm"] = rss_kib(litellm.pid)
        finally:
            stop(sidecar)
            if litellm is not None:
                stop(litellm)
                ll_log.close()
            stop(upstream)
            log.close()
        calls = sum(
            1 for line in open(Path(tmp) / "sidecar.log", "rb") if b'"gateway call"' in line
        )
        keyed = sum(1 for line in open(Path(tmp) / "sidecar.log", "rb") if b'"key":"bench"' in line)

    print(machine())
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"load: {seconds:g} s per run after a warm-up with the same clients; the generator "
        "runs in its own process. Generator, upstream and gateway share the machine's cores; "
        "'CPU/req' is the server process's CPU time per request (upstream direct; gateway "
        "process through it), what it costs on a core of its own."
    )
    print(f"{'run':<32}{'direct rps':>12}{'gateway rps':>13}{'ratio':>8}"
          f"{'p50 direct':>12}{'p50 gw':>9}{'added':>8}{'ttft added':>12}"
          f"{'CPU/req up':>12}{'CPU/req gw':>12}")  # fmt: skip
    for (api, stream, clients), pair in results.items():
        d, g = pair.direct, pair.gateway
        kind = "stream" if stream else "plain"
        name = f"{api} {kind}, {clients} client{'s' if clients > 1 else ''}"
        print(
            f"{name:<32}{d['rps']:>12.0f}{g['rps']:>13.0f}{g['rps'] / d['rps']:>8.2f}"
            f"{d['p50_ms']:>10.2f}ms{g['p50_ms']:>7.2f}ms{g['p50_ms'] - d['p50_ms']:>6.2f}ms"
            f"{g['ttft_p50_ms'] - d['ttft_p50_ms']:>10.2f}ms"
            f"{d['cpu_us_per_request']:>10.0f}us{g['cpu_us_per_request']:>10.0f}us"
        )
        if d["errors"] or g["errors"]:
            print(f"  non-2xx answers: direct {d['errors']:.0f}, gateway {g['errors']:.0f}")
    print(f"gateway call log lines written: {calls}, with the gateway key: {keyed}")
    low = max(c for c in concurrency if c == 1)
    high = max(concurrency)
    for api in APIS:
        added = max(
            results[(api, s, low)].gateway["p50_ms"] - results[(api, s, low)].direct["p50_ms"]
            for s in (False, True)
        )
        one = results[(api, True, low)]
        ttft = one.gateway["ttft_p50_ms"] - one.direct["ttft_p50_ms"]
        print(f"{api}: added p50 latency (1 client, worst of plain/stream): {added:.2f} ms "
              f"(target <= {TARGET_ADDED_P50_MS} ms) {verdict(added <= TARGET_ADDED_P50_MS)}")  # fmt: skip
        print(f"{api}: added time to first token (1 client): {ttft:.2f} ms "
              f"(target <= {TARGET_ADDED_TTFT_MS} ms) {verdict(ttft <= TARGET_ADDED_TTFT_MS)}")  # fmt: skip
    ratio = min(
        results[("openai", s, high)].gateway["rps"] / results[("openai", s, high)].direct["rps"]
        for s in (False, True)
    )
    print(f"openai: throughput at {high} clients, gateway / direct (worst): {ratio:.2f} "
          f"(target >= {TARGET_THROUGHPUT}) {verdict(ratio >= TARGET_THROUGHPUT)}")  # fmt: skip
    openai_rows = {(st, c): p for (a, st, c), p in results.items() if a == "openai"}
    if all(p.litellm is not None for p in openai_rows.values()):
        _versus_litellm(openai_rows, low, high, rss)
    return 0


def _versus_litellm(
    results: dict[tuple[bool, int], Pair], low: int, high: int, rss: dict[str, int]
) -> None:
    print("\nours (key + budget + RPM/TPM enforced) vs LiteLLM proxy (master key), same upstream:")
    print(f"{'run':<22}{'ours rps':>10}{'LiteLLM rps':>13}{'ratio':>8}"
          f"{'ours added':>12}{'LiteLLM added':>15}{'ratio':>8}"
          f"{'CPU/req ours':>14}{'CPU/req LiteLLM':>17}")  # fmt: skip
    p50_ratios: list[float] = []
    rps_ratios: list[float] = []
    for (stream, clients), pair in results.items():
        assert pair.litellm is not None
        d, g, ll = pair.direct, pair.gateway, pair.litellm
        ours, theirs = g["p50_ms"] - d["p50_ms"], ll["p50_ms"] - d["p50_ms"]
        name = f"{'stream' if stream else 'plain'}, {clients} client{'s' if clients > 1 else ''}"
        print(f"{name:<22}{g['rps']:>10.0f}{ll['rps']:>13.0f}{g['rps'] / ll['rps']:>8.2f}"
              f"{ours:>10.2f}ms{theirs:>13.2f}ms{ours / theirs:>8.3f}"
              f"{g['cpu_us_per_request']:>12.0f}us{ll['cpu_us_per_request']:>15.0f}us")  # fmt: skip
        if ll["errors"]:
            print(f"  non-2xx answers from LiteLLM: {ll['errors']:.0f}")
        if clients == low:
            p50_ratios.append(ours / theirs)
        if clients == high:
            rps_ratios.append(g["rps"] / ll["rps"])
    p50, rps = max(p50_ratios), min(rps_ratios)
    mem = rss["gateway"] / rss["litellm"]
    print(f"added p50 at {low} client, ours / LiteLLM (worst of plain/stream): {p50:.3f} "
          f"(target <= {TARGET_VS_LITELLM_P50}) {verdict(p50 <= TARGET_VS_LITELLM_P50)}")  # fmt: skip
    print(f"throughput at {high} clients, ours / LiteLLM (worst): {rps:.2f} "
          f"(target >= {TARGET_VS_LITELLM_RPS}) {verdict(rps >= TARGET_VS_LITELLM_RPS)}")  # fmt: skip
    print(f"RSS of the serving process after the runs: ours {rss['gateway'] / 1024:.0f} MiB, "
          f"LiteLLM {rss['litellm'] / 1024:.0f} MiB, ratio {mem:.2f} "
          f"(target <= {TARGET_VS_LITELLM_RSS}) {verdict(mem <= TARGET_VS_LITELLM_RSS)}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
