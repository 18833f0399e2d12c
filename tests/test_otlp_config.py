"""The `otlp:` config section, its environment variable and flag; and OTLP/gRPC's
answers to a missing token and to bytes that are no export."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from _otlp import chat_span, request
from _server import free_port
from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.settings import resolve
from ai_usage_exporter.otlp.receiver import OtlpReceiver, start_grpc
from ai_usage_exporter.recorder import Recorder

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def test_grpc_port_from_file_environment_and_flag(tmp_path: Path) -> None:
    path = _write(tmp_path, "otlp:\n  grpc_port: 4317\n")
    assert resolve({"config": path}, environ={}).otlp_grpc_port == 4317
    env = {"AI_USAGE_EXPORTER_OTLP_GRPC_PORT": "4318"}
    assert resolve({"config": path}, environ=env).otlp_grpc_port == 4318
    assert resolve({"config": path, "otlp_grpc_port": 4319}, environ=env).otlp_grpc_port == 4319
    assert resolve({}, environ={}).otlp_grpc_port is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("otlp:\n  grpc: 4317\n", "config.yml:2: unknown key 'grpc'"),
        ("otlp:\n  grpc_port: 0\n", "config.yml:2: must be >= 1, got 0"),
        ("otlp:\n  grpc_port: 70000\n", "grpc_port must be 1..65535, got 70000"),
        ("otlp: 4317\n", "config.yml:1:"),
    ],
)
def test_otlp_section_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"config": _write(tmp_path, text)}, environ={})
    assert message in str(info.value)


def test_grpc_refuses_without_the_token_and_answers_garbage_invalid(tmp_path: Path) -> None:
    recorder = Recorder(str(tmp_path / "l.db"))
    port = free_port()

    async def run() -> None:
        server, _ = await start_grpc(OtlpReceiver(recorder), "127.0.0.1", port, ["tok"])
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                export = channel.unary_unary(
                    EXPORT,
                    request_serializer=bytes,
                    response_deserializer=ExportTraceServiceResponse.FromString,
                )
                body = request([chat_span(input_tokens=4, output_tokens=2)]).SerializeToString()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await export(body)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                auth = (("authorization", "Bearer tok"),)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await export(b"\xff\xfe not protobuf", metadata=auth)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                reply = await export(body, metadata=auth)
                assert not reply.HasField("partial_success")
        finally:
            await server.stop(grace=1)

    asyncio.run(run())
    recorder.flush(5)
    assert recorder.view()["totals"]["requests"] == 1
    recorder.close()
