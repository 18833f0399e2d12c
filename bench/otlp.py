"""OTLP receiver: spans per second for a 512-span export, beside its anchors.

Run from the repository root: ``python3 -m bench.otlp`` (``--smoke`` for a quick check).

Four figures, one run, the same recorder settings (SQLite, synchronous=normal), each
in CPU time of this process (its writer thread's commits included), so a machine
shared with other work still gives comparable ratios:
  - export, all GenAI: protobuf bytes -> decode -> map -> validate -> commit, 512 calls;
  - export, mixed: 512 spans of which 1 in 10 is a GenAI call (the rest HTTP/DB spans);
  - anchor, decode only: `ExportTraceServiceRequest.FromString` of the same bytes;
  - anchor, our JSON ingest of the same events: orjson.loads -> Recorder.parse -> commit.
Also the p50 time an all-GenAI export spends before its commit (decode, map, validate).
Targets (issue 19): mixed >= 0.5x decode-only; all-GenAI >= 1.0x of the JSON ingest;
p50 added per export <= 5 ms.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ai_usage_exporter.otlp.genai import map_batch
from ai_usage_exporter.otlp.receiver import OtlpReceiver
from ai_usage_exporter.otlp.spans import collect
from ai_usage_exporter.recorder import Recorder
from bench._harness import machine, p50, parse_args

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _otlp import chat_span, request, span  # noqa: E402

BATCH = 512


def _batch(genai_every: int, round_: int) -> bytes:
    spans = []
    for i in range(BATCH):
        if i % genai_every == 0:
            spans.append(
                chat_span(
                    model="gpt-4o-mini",
                    input_tokens=100 + i,
                    output_tokens=20,
                    attrs={
                        "gen_ai.response.id": f"chatcmpl-{round_}-{i}",
                        "server.address": "api.openai.com",
                    },
                )
            )
        else:
            spans.append(
                span(
                    "GET /api/items",
                    {
                        "http.request.method": "GET",
                        "http.route": "/api/items",
                        "http.response.status_code": 200,
                        "url.path": "/api/items",
                        "server.address": "shop.internal",
                        "user_agent.original": "Mozilla/5.0",
                    },
                )
            )
    return bytes(request(spans, service="shop").SerializeToString())


async def _run(seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    recorder = Recorder(str(tmp / "otlp.db"), synchronous="normal")
    receiver = OtlpReceiver(recorder)
    out: dict[str, Any] = {}
    for label, every in (("all GenAI", 1), ("mixed 1 in 10", 10)):
        bodies = [_batch(every, r) for r in range(200)]
        n = 0
        spans = 0
        added: list[float] = []
        t0 = time.process_time()
        while time.process_time() - t0 < seconds and n < len(bodies):
            body = bodies[n]
            a0 = time.process_time()
            receiver.prepare(body)  # what export does before its commit, timed alone
            added.append(time.process_time() - a0)
            await receiver.export(body)
            n += 1
            spans += BATCH
        elapsed = time.process_time() - t0
        # Each export was prepared twice (once timed alone above); that time is taken off.
        pre = sum(added)
        out[label] = {"spans_per_s": spans / (elapsed - pre), "p50_added_ms": p50(added) * 1e3}
        # anchor: decode only
        d0 = time.process_time()
        k = 0
        while time.process_time() - d0 < seconds / 2:
            ExportTraceServiceRequest.FromString(bodies[k % len(bodies)])
            k += 1
        out[label]["decode_only_spans_per_s"] = k * BATCH / (time.process_time() - d0)
        if every == 1:
            # anchor: the same events as JSON through the /api/usage path
            events = [map_batch(collect(b)).events for b in bodies]
            for batch in events:
                for e in batch:
                    e["idempotency_key"] = "json-" + e["idempotency_key"]
            jsons = [orjson.dumps(b) for b in events]
            j0 = time.process_time()
            m = 0
            while time.process_time() - j0 < seconds and m < len(jsons):
                await recorder.submit(recorder.parse(orjson.loads(jsons[m])))
                m += 1
            out[label]["json_ingest_spans_per_s"] = m * BATCH / (time.process_time() - j0)
    recorder.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    seconds = 0.3 if args.smoke else 5.0
    print(machine())
    res = asyncio.run(_run(seconds))
    g, m = res["all GenAI"], res["mixed 1 in 10"]
    print(
        f"export of {BATCH} spans, all GenAI: {g['spans_per_s']:,.0f} spans/CPU-s "
        f"(p50 {g['p50_added_ms']:.2f} ms before the commit)"
    )
    print(
        f"  anchor, JSON ingest of the same events: {g['json_ingest_spans_per_s']:,.0f} events/CPU-s "
        f"-> {g['spans_per_s'] / g['json_ingest_spans_per_s']:.2f}x (target >= 1.0x)"
    )
    print(f"  anchor, decode only: {g['decode_only_spans_per_s']:,.0f} spans/CPU-s")
    print(
        f"export of {BATCH} spans, mixed 1 in 10: {m['spans_per_s']:,.0f} spans/CPU-s "
        f"(p50 {m['p50_added_ms']:.2f} ms before the commit)"
    )
    print(
        f"  anchor, decode only: {m['decode_only_spans_per_s']:,.0f} spans/CPU-s "
        f"-> {m['spans_per_s'] / m['decode_only_spans_per_s']:.2f}x (target >= 0.5x)"
    )
    print(f"p50 added per all-GenAI export: {g['p50_added_ms']:.2f} ms (target <= 5 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
