"""Real OpenTelemetry senders into the real sidecar: the Python SDK with its OTLP/HTTP
and OTLP/gRPC exporters, opentelemetry-instrumentation-openai-v2 and OpenLLMetry's
anthropic instrumentation on the real clients against the fake provider, plain and
streamed. The counters equal the fake's usage to the token, and a retried export
counts once."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _binaries import in_ci
from _fake_provider import (
    ANTHROPIC_DELTA_USAGE,
    ANTHROPIC_START_USAGE,
    ANTHROPIC_USAGE,
    OPENAI_CHAT_USAGE,
    OPENAI_STREAM_USAGE,
)
from _sdk import fake_provider
from _server import free_port, scrape, server_process
from ai_usage_exporter.core.metrics import TOKEN_TYPES

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")
http_exporter = pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
grpc_exporter = pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
openllmetry_anthropic = pytest.importorskip("opentelemetry.instrumentation.anthropic")

from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

MESSAGES = [{"role": "user", "content": "Say hello"}]
TOKEN = "otlp-write-token"


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with fake_provider() as url:
        yield url


def totals(samples: dict[Any, float], name: str, by: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name:
            key = dict(labels).get(by, "")
            out[key] = out.get(key, 0.0) + v
    return out


def _provider(service: str, exporter: Any) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(BatchSpanProcessor(exporter))
    return tp


def test_real_exporters_and_instrumentations_count_to_the_token(
    provider: str, tmp_path: Path
) -> None:
    grpc_port = free_port()
    with server_process(
        tmp_path / "ledger.db",
        args=["--otlp-grpc-port", str(grpc_port)],
        env={"AI_USAGE_EXPORTER_WRITE_TOKEN": TOKEN},
    ) as s:
        headers = {"authorization": f"Bearer {TOKEN}"}
        # OTLP/HTTP protobuf, as `OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer ...` makes it.
        http_tp = _provider(
            "chat-app",
            http_exporter.OTLPSpanExporter(endpoint=f"{s.url}/v1/traces", headers=headers),
        )
        # OTLP/gRPC with gzip, the token as `authorization` metadata.
        grpc_tp = _provider(
            "claude-app",
            grpc_exporter.OTLPSpanExporter(
                endpoint=f"127.0.0.1:{grpc_port}",
                insecure=True,
                headers=headers,
                compression=__import__("grpc").Compression.Gzip,
            ),
        )
        oai_inst = openai_v2.OpenAIInstrumentor()
        ant_inst = openllmetry_anthropic.AnthropicInstrumentor()
        oai_inst.instrument(tracer_provider=http_tp)
        ant_inst.instrument(tracer_provider=grpc_tp)
        # Closed at the end: a dropped client's keep-alive socket would be closed by the GC
        # in whichever test runs then, as a ResourceWarning pytest reports there.
        oai = openai.OpenAI(base_url=f"{provider}/v1", api_key="k", max_retries=0)
        ant = anthropic.Anthropic(base_url=provider, api_key="k", max_retries=0)
        try:
            oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            for _ in oai.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            ):
                pass
            ant.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES)
            with ant.messages.stream(
                model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES
            ) as stream:
                stream.get_final_message()
            assert http_tp.force_flush(10_000)
            assert grpc_tp.force_flush(10_000)
        finally:
            oai.close()
            ant.close()
            oai_inst.uninstrument()
            ant_inst.uninstrument()
            http_tp.shutdown()
            grpc_tp.shutdown()
        samples = scrape(s.url, {"authorization": f"Bearer {TOKEN}"})
        view = httpx.get(f"{s.url}/api/metrics", headers=headers).json()
    o, st, a, d = OPENAI_CHAT_USAGE, OPENAI_STREAM_USAGE, ANTHROPIC_USAGE, ANTHROPIC_DELTA_USAGE
    expected_input = (
        o["prompt_tokens"] + st["prompt_tokens"]
        + a["input_tokens"] + a["cache_read_input_tokens"]
        + d["input_tokens"] + d["cache_creation_input_tokens"]
    )  # fmt: skip
    # OpenLLMetry's anthropic stream wrapper adds message_delta's output count to
    # message_start's, though Anthropic documents message_delta's as the cumulative total
    # (opentelemetry/instrumentation/anthropic/streaming.py): its span says 2 more than
    # the provider, and we count what the span says.
    openllmetry_stream_extra = ANTHROPIC_START_USAGE["output_tokens"]
    expected_output = (
        o["completion_tokens"] + st["completion_tokens"] + a["output_tokens"] + d["output_tokens"]
        + openllmetry_stream_extra
    )  # fmt: skip
    tokens = totals(samples, "ai_tokens_total", "type")
    assert tokens == {
        **dict.fromkeys(TOKEN_TYPES, 0),
        "input": expected_input,
        "output": expected_output,
        "total": expected_input + expected_output,
        # openai-v2 reports the input with its cache inside and no cache count of its own;
        # OpenLLMetry reports Anthropic's cache reads and writes beside the input.
        "cached_input": a["cache_read_input_tokens"],
        "cache_write": d["cache_creation_input_tokens"],
    }
    assert totals(samples, "ai_requests_total", "service") == {"chat-app": 2, "claude-app": 2}
    assert totals(samples, "ai_exporter_otlp_spans_total", "outcome")["counted"] == 4
    assert view["totals"]["requests"] == 4


def test_a_retried_export_counts_once_also_after_a_restart(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    from _otlp import chat_span, request

    body = request([chat_span(input_tokens=100, output_tokens=7)]).SerializeToString()
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {TOKEN}"}
    db = tmp_path / "ledger.db"
    env = {"AI_USAGE_EXPORTER_WRITE_TOKEN": TOKEN}
    for _ in range(2):
        with server_process(db, env=env) as s:
            for _ in range(2):
                r = httpx.post(f"{s.url}/v1/traces", content=body, headers=headers)
                assert r.status_code == 200, r.text
                assert r.headers["content-type"] == "application/x-protobuf"
                reply = ExportTraceServiceResponse.FromString(r.content)
                assert not reply.HasField("partial_success")
            samples = scrape(s.url, {"authorization": f"Bearer {TOKEN}"})
    assert totals(samples, "ai_tokens_total", "type")["input"] == 100
    assert totals(samples, "ai_requests_total", "provider") == {"openai": 1}


_APP = """
import openai

client = openai.OpenAI(max_retries=0)  # OPENAI_BASE_URL and OPENAI_API_KEY from the environment
client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
for _ in client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "hi"}],
    stream=True,
    stream_options={"include_usage": True},
):
    pass
client.close()
"""


def _readme_exports(after: str) -> dict[str, str]:
    """The `export` lines of the README's first shell block after the line `after`."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme[readme.index(after) :].split("```sh\n", 1)[1].split("```", 1)[0]
    env: dict[str, str] = {}
    for line in block.splitlines():
        if line.startswith("export "):
            for word in shlex.split(line[len("export ") :]):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def test_the_readme_opentelemetry_instrument_setup_counts_to_the_token(
    provider: str, tmp_path: Path
) -> None:
    """The README's no-code-change setup, run as it is written: its variables, its command."""
    exe = Path(sys.executable).parent / "opentelemetry-instrument"
    if not exe.exists():
        message = "opentelemetry-instrument is missing: pip install -e '.[test]'"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    readme = _readme_exports("Python, any contrib GenAI instrumentation, no code change")
    assert readme["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"
    app = tmp_path / "app.py"
    app.write_text(_APP)
    with server_process(tmp_path / "ledger.db", env={"AI_USAGE_EXPORTER_WRITE_TOKEN": TOKEN}) as s:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": f"{provider}/v1",
            "OPENAI_API_KEY": "k",
            **{
                name: value.replace("http://127.0.0.1:9478", s.url).replace(
                    "$AI_USAGE_EXPORTER_WRITE_TOKEN", TOKEN
                )
                for name, value in readme.items()
            },
        }
        proc = subprocess.run(
            [str(exe), sys.executable, str(app)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        samples = scrape(s.url, {"authorization": f"Bearer {TOKEN}"})
    o, st = OPENAI_CHAT_USAGE, OPENAI_STREAM_USAGE
    tokens = totals(samples, "ai_tokens_total", "type")
    assert (tokens["input"], tokens["output"]) == (
        o["prompt_tokens"] + st["prompt_tokens"],
        o["completion_tokens"] + st["completion_tokens"],
    )
    assert totals(samples, "ai_requests_total", "service") == {"chat-app": 2}
    assert totals(samples, "ai_requests_total", "model") == {"gpt-4o": 1, "gpt-4o-mini": 1}


def _readme_python(after: str) -> str:
    """The README's first Python block after the line `after`."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return readme[readme.index(after) :].split("```python\n", 1)[1].split("```", 1)[0]


_AGENT = """
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=BASE_URL, api_key="k"))
agent = Agent(model, name="support_agent")
agent.run_sync("Say hello")
agent.run_sync("Say hello again")
"""


def test_the_readme_pydantic_ai_logfire_setup_counts_to_the_token(
    provider: str, tmp_path: Path
) -> None:
    """The README's Logfire setup, its variables and its lines, over a real Pydantic AI agent."""
    for module in ("logfire", "pydantic_ai"):
        try:
            __import__(module)
        except ImportError:
            message = f"{module} is missing: pip install -e '.[test]'"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
    heading = "Pydantic AI / Logfire"
    readme = _readme_exports(heading)
    app = tmp_path / "agent.py"
    app.write_text(_readme_python(heading) + f"BASE_URL = {provider + '/v1'!r}\n" + _AGENT)
    with server_process(tmp_path / "ledger.db", env={"AI_USAGE_EXPORTER_WRITE_TOKEN": TOKEN}) as s:
        env = {
            **os.environ,
            "OTEL_SERVICE_NAME": "agent-app",
            **{
                name: value.replace("http://127.0.0.1:9478", s.url).replace("<write token>", TOKEN)
                for name, value in readme.items()
            },
        }
        proc = subprocess.run(
            [sys.executable, str(app)], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        samples = scrape(s.url, {"authorization": f"Bearer {TOKEN}"})
        view = httpx.get(
            f"{s.url}/api/metrics", headers={"authorization": f"Bearer {TOKEN}"}
        ).json()
    o = OPENAI_CHAT_USAGE
    tokens = totals(samples, "ai_tokens_total", "type")
    # Pydantic AI's input holds the cache, read beside it as a part.
    assert (tokens["input"], tokens["output"], tokens["cached_input"]) == (
        2 * o["prompt_tokens"],
        2 * o["completion_tokens"],
        2 * o["prompt_tokens_details"]["cached_tokens"],
    )
    assert totals(samples, "ai_requests_total", "service") == {"agent-app": 2}
    outcomes = totals(samples, "ai_exporter_otlp_spans_total", "outcome")
    assert (outcomes["counted"], outcomes["aggregate"]) == (2, 2)
    assert [(a["agent"], a["requests"]) for a in view["by_agent"]] == [("support_agent", 2)]
