"""Time what `instrument()` adds to an OpenAI SDK call, in process and with the HTTP sender.

Run from the repository root: ``python3 -m bench.sdk`` (``--smoke`` for a quick check).

A local fake provider (uvicorn, in its own process, as is the sidecar) answers ``/v1/chat/completions`` with a
fixed body; every contender makes the same non-streamed calls with the real `openai`
package. Two figures:

- **added (exact)**: for our instrumentation, the SDK's own call is timed from inside
  the wrapper, so the time the wrapper adds (budget check, timing, reading the usage,
  building the event, queueing it) is measured per call without the network's noise.
- **added (difference)**: p50 and p99 of instrumented calls minus those of bare calls,
  interleaved call by call, for ours (in process and HTTP) and for OpenLIT when it is
  installed (``pip install openlit``); this includes the network's noise.

Targets: p50 added <= 25 us in process, <= 50 us with the HTTP sender, and at least 5x
less than OpenLIT.
"""

from __future__ import annotations

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

    return Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
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


def _exact(client: Any, n: int) -> list[float]:
    """Per call: wrapper time minus the SDK call's own time, in microseconds."""
    inner = client.chat.completions.create
    inside = [0.0]

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        r = inner(*args, **kwargs)
        inside[0] = time.perf_counter() - t
        return r

    client.chat.completions.create = timed
    instrument(client)
    create = client.chat.completions.create
    out = []
    for _ in range(n):
        t = time.perf_counter()
        create(model="gpt-4o-mini", messages=MESSAGES)
        out.append((time.perf_counter() - t - inside[0]) * 1e6)
    return out


def _interleaved(
    bare: Callable[[], Any], instrumented: Callable[[], Any], n: int
) -> tuple[list[float], list[float]]:
    """Alternate the order (ABBA) so that neither contender always goes first."""
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        order = ((bare, a), (instrumented, b)) if i % 2 == 0 else ((instrumented, b), (bare, a))
        for fn, out in order:
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e6)
    return a, b


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
        bare = _client(url)

        def call_bare() -> Any:
            return bare.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

        for _ in range(min(n, 50)):  # warm connections and price caches
            call_bare()
        for mode in ("in-process", "http"):
            if mode == "in-process":
                configure(recorder=recorder)
            else:
                configure(url=f"http://127.0.0.1:{sidecar_port}")
            exact = _exact(_client(url), n)
            inst = instrument(_client(url))

            def call_instrumented(c: Any = inst) -> Any:
                return c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

            a, b = _interleaved(call_bare, call_instrumented, n)
            flush(30)
            results[mode] = statistics.median(exact)
            print(
                f"{mode:>10}: added (exact) p50 {statistics.median(exact):7.1f} us, p99 {_q(exact, 0.99):7.1f} us | "
                f"bare p50 {statistics.median(a):7.0f} us, instrumented p50 {statistics.median(b):7.0f} us, "
                f"added (difference) p50 {statistics.median(b) - statistics.median(a):+7.1f} us, "
                f"p99 {_q(b, 0.99) - _q(a, 0.99):+7.1f} us"
            )
            shutdown(5)
        openlit: Any
        try:
            openlit = importlib.import_module("openlit")
        except ImportError:
            print("   openlit: not installed (pip install openlit); skipped")
            openlit = None
        if openlit is not None:
            bare_before = _client(url)
            for _ in range(20):
                bare_before.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            a = []
            for _ in range(n):  # bare calls first: OpenLIT patches the class, not one client
                t = time.perf_counter()
                bare_before.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                a.append((time.perf_counter() - t) * 1e6)
            openlit.init(
                otlp_endpoint="http://127.0.0.1:9/", disable_batch=False, disable_metrics=True
            )
            lit = _client(url)
            b = []
            for _ in range(n):
                t = time.perf_counter()
                lit.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                b.append((time.perf_counter() - t) * 1e6)
            added = statistics.median(b) - statistics.median(a)
            results["openlit"] = added
            print(
                f"{'openlit':>10}: bare p50 {statistics.median(a):7.0f} us, instrumented p50 "
                f"{statistics.median(b):7.0f} us, added (difference) p50 {added:+7.1f} us, "
                f"p99 {_q(b, 0.99) - _q(a, 0.99):+7.1f} us"
            )
        sidecar.terminate()
        sidecar.wait(30)
        recorder.close()
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
        ratio = results["openlit"] / max(results["in-process"], 1e-9)
        print(
            f"target >= {TARGET_VS_OPENLIT}x less than OpenLIT: {ratio:.1f}x {verdict(ratio >= TARGET_VS_OPENLIT)}"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-provider":
        uvicorn.run(_provider_app(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
        sys.exit(0)
    sys.exit(main())
