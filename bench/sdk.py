"""Time what `instrument()` adds to an OpenAI SDK call, in process and with the HTTP sender.

Run from the repository root: ``python3 -m bench.sdk`` (``--smoke`` for a quick check).

A local fake provider (uvicorn, in its own process, as is the sidecar) answers
``/v1/chat/completions`` with a fixed body; every contender makes the same non-streamed
calls with the real `openai` package. Each client's ``_post`` (the SDK's HTTP request)
is timed from inside, so per call the time *outside* the request is known: the SDK's
own work plus whatever the instrumentation adds. The figure is that time's p50 (and
p99) for the instrumented client minus the same for a bare client, so the network's
noise is not in it. Bare and instrumented calls are interleaved (ABBA). Contenders:
ours in process (``configure(recorder=...)``), ours with the HTTP sender, and OpenLIT
(``openlit.init()`` with its defaults, exporting OTLP to a sink in the fake provider's
process) when it is installed; OpenLIT patches the class, so it runs last, against
bare calls made just before it.

Targets: p50 added <= 25 us in process, <= 50 us with the HTTP sender, and at least 5x
less than OpenLIT.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ai_usage_exporter import Recorder, configure, flush, instrument
from ai_usage_exporter.sdk import shutdown

from ._harness import machine, parse_args, verdict

TARGET_IN_PROCESS_US = 25.0
TARGET_HTTP_US = 50.0
TARGET_VS_OPENLIT = 5.0

BODY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1730000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,'
    b'"prompt_tokens_details":{"cached_tokens":1920}}}'
)
MESSAGES = [{"role": "user", "content": "hi"}]


async def _chat(request: Request) -> Response:
    await request.body()
    return Response(BODY, media_type="application/json")


def _provider_app() -> Starlette:
    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    async def otlp_sink(request: Request) -> Response:
        # OpenLIT's OTLP/HTTP exports land here and are dropped: its exporter does its
        # full work, and nothing fails or retries.
        await request.body()
        return Response(b"", media_type="application/x-protobuf")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v1/traces", otlp_sink, methods=["POST"]),
            Route("/v1/metrics", otlp_sink, methods=["POST"]),
            Route("/v1/logs", otlp_sink, methods=["POST"]),
        ]
    )


def _spawn(cmd: list[str], url: str) -> subprocess.Popen[bytes]:
    """A server in its own process, so its work never competes for this one's GIL."""
    import httpx

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)


def _timed_client(url: str) -> tuple[Any, list[float]]:
    """A client whose HTTP request is timed from inside; the list holds the last time."""
    client = _client(url)
    resource = client.chat.completions
    post = resource._post
    inside = [0.0]

    def timed_post(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return post(*args, **kwargs)
        finally:
            inside[0] = time.perf_counter() - t

    resource._post = timed_post
    return client, inside


def _outside(client: Any, inside: list[float]) -> Callable[[], float]:
    """One call; returns its time outside the HTTP request, in microseconds."""
    create = client.chat.completions.create

    def call() -> float:
        t = time.perf_counter()
        create(model="gpt-4o-mini", messages=MESSAGES)
        return (time.perf_counter() - t - inside[0]) * 1e6

    return call


def _interleaved(
    bare: Callable[[], float], instrumented: Callable[[], float], n: int
) -> tuple[list[float], list[float]]:
    """Alternate the order (ABBA) so that neither contender always goes first."""
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        if i % 2 == 0:
            a.append(bare())
            b.append(instrumented())
        else:
            b.append(instrumented())
            a.append(bare())
    return a, b


def _report(name: str, a: list[float], b: list[float]) -> float:
    added = statistics.median(b) - statistics.median(a)
    print(
        f"{name:>10}: added p50 {added:+7.1f} us, p99 {_q(b, 0.99) - _q(a, 0.99):+8.1f} us "
        f"(outside the request: bare p50 {statistics.median(a):6.1f} us, "
        f"instrumented p50 {statistics.median(b):6.1f} us)"
    )
    return added


def _q(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    n = 30 if args.smoke else 3000
    logging.getLogger("ai_usage_exporter").setLevel(logging.ERROR)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    provider = _spawn([sys.executable, "-m", "bench.sdk", "--serve-provider", str(port)], url)
    print(machine())
    print(f"calls per contender: {n} (non-streamed chat completions, openai package)")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder(str(Path(tmp) / "bench.db"), synchronous="normal")
        sidecar_port = _free_port()
        sidecar = _spawn(
            [sys.executable, "-m", "ai_usage_exporter", "serve", "--port", str(sidecar_port),
             "--db", str(Path(tmp) / "sidecar.db")],
            f"http://127.0.0.1:{sidecar_port}",
        )  # fmt: skip
        bare_client, bare_inside = _timed_client(url)
        call_bare = _outside(bare_client, bare_inside)
        for _ in range(min(n, 50)):  # warm connections
            call_bare()
        for mode in ("in-process", "http"):
            if mode == "in-process":
                configure(recorder=recorder)
            else:
                configure(url=f"http://127.0.0.1:{sidecar_port}")
            client, inside = _timed_client(url)
            call = _outside(instrument(client), inside)
            for _ in range(min(n, 50)):  # warm the worker and the price cache
                call()
            flush(30)
            a, b = _interleaved(call_bare, call, n)
            flush(30)
            results[mode] = _report(mode, a, b)
            shutdown(5)
        openlit: Any
        try:
            openlit = importlib.import_module("openlit")
        except ImportError:
            print("   openlit: not installed (pip install openlit); skipped")
            openlit = None
        if openlit is not None:
            a = [call_bare() for _ in range(n)]
            # OpenLIT flushes its exporters at exit; the sink must outlive that, and
            # exit handlers run last-registered first.
            atexit.register(provider.wait, 30)
            atexit.register(provider.terminate)
            openlit.init(otlp_endpoint=url, disable_batch=False)
            client, inside = _timed_client(url)
            call = _outside(client, inside)
            for _ in range(min(n, 50)):
                call()
            b = [call() for _ in range(n)]
            results["openlit"] = _report("openlit", a, b)
        sidecar.terminate()
        sidecar.wait(30)
        recorder.close()
    if "openlit" not in results:
        provider.terminate()
        provider.wait(30)
    print(
        f"target in-process p50 added <= {TARGET_IN_PROCESS_US} us: "
        f"{verdict(results['in-process'] <= TARGET_IN_PROCESS_US)}"
    )
    print(
        f"target http p50 added <= {TARGET_HTTP_US} us: {verdict(results['http'] <= TARGET_HTTP_US)}"
    )
    if "openlit" in results:
        ratio = results["openlit"] / max(results["in-process"], results["http"], 1e-9)
        print(
            f"target >= {TARGET_VS_OPENLIT}x less than OpenLIT: {ratio:.1f}x {verdict(ratio >= TARGET_VS_OPENLIT)}"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-provider":
        uvicorn.run(_provider_app(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
        sys.exit(0)
    sys.exit(main())
