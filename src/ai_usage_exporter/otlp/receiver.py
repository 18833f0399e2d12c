"""The OTLP edge: POST /v1/traces (protobuf, JSON) and the gRPC TraceService.

Both hand the decoded request to `OtlpReceiver.export`, which maps the spans (pure,
genai.py), validates the events by the rules POST /api/usage applies (`typed_event`, or
`Recorder.parse` for what it cannot vouch for), and waits for the one commit that
records them; only then is the export acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ai_usage_exporter.core.events.model import EventError, UsageEvent
from ai_usage_exporter.core.events.validate import typed_event
from ai_usage_exporter.ledger import LedgerError
from ai_usage_exporter.otlp import decode
from ai_usage_exporter.otlp.genai import OUTCOMES, Recent, map_batch
from ai_usage_exporter.otlp.spans import Batch, SpanDecodeError, collect
from ai_usage_exporter.recorder.recorder import Recorder, RecorderBusyError, RecorderClosedError

log = logging.getLogger("ai_usage_exporter.otlp")

# Named in partial_success so an operator sees why their metrics or logs go nowhere.
NOT_COLLECTED = (
    "ai-usage-exporter counts GenAI spans only; {signal} are not stored. Send them to "
    "another backend, or export traces alone (OTEL_METRICS_EXPORTER=none, "
    "OTEL_LOGS_EXPORTER=none)."
)
_MAX_MESSAGES = 5


class ExportFailed(Exception):
    """The export was not recorded: the HTTP status and gRPC code to answer with."""

    def __init__(
        self, status: int, code: grpc.StatusCode, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ExportResult:
    rejected: int
    message: str


@dataclass(slots=True)
class Prepared:
    """An export's events, ready to commit, and what became of its other spans."""

    events: list[UsageEvent]
    outcomes: Counter[str]
    messages: list[str]
    rejected: int
    calls: list[tuple[str, bytes, tuple[bytes, ...], str | None]]


class SpanCollector(Collector):
    """`ai_exporter_otlp_spans_total{outcome}`: what became of every span received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, outcomes: Counter[str]) -> None:
        with self._lock:
            self.counts.update(outcomes)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "ai_exporter_otlp_spans",
            "Spans received over OTLP, by what became of them: counted as a call, a duplicate "
            "of one already counted, not GenAI, an agent or workflow span (attribution only), "
            "merged into another span of the same call, GenAI but not an inference call, or "
            "rejected.",
            labels=["outcome"],
        )
        with self._lock:
            counts = dict(self.counts)
        for outcome in OUTCOMES:
            family.add_metric([outcome], float(counts.get(outcome, 0)))
        yield family


class OtlpReceiver:
    """Turns OTLP trace exports into recorded usage events, for HTTP and gRPC alike."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.spans = SpanCollector()
        # One process's memory: sidecars behind a balancer each know their own exports.
        self.recent = Recent()
        try:
            recorder.registry.register(self.spans)
        except ValueError:  # a second app over the same registry: its own counts stay apart
            pass

    def prepare(self, body: bytes) -> Prepared:
        """An encoded ExportTraceServiceRequest's calls as validated events (no I/O)."""
        try:
            batch = collect(body)
        except SpanDecodeError as exc:
            self.recorder.count_rejected("malformed")
            raise ExportFailed(400, grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        return self.prepare_batch(batch)

    def prepare_batch(self, batch: Batch) -> Prepared:
        """An export's GenAI spans, however they were decoded, as validated events (no I/O)."""
        recorder = self.recorder
        mapped = map_batch(batch, self.recent)
        messages = list(mapped.rejected)
        parts = mapped.parts
        limit = recorder.limits.max_events_per_request
        if len(parts) > limit:
            recorder.count_rejected("too_large", len(parts))
            raise ExportFailed(
                413,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the export holds {len(parts)} GenAI calls; the limit is {limit} per export: "
                "lower the span processor's batch size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)",
            )
        rejected = mapped.outcomes["rejected"]
        events: list[UsageEvent] = []
        # The calls `typed_event` cannot vouch for go through the validator POST
        # /api/usage uses, which accepts them or names what is wrong.
        rest: list[int] = []
        refused: set[int] = set()
        limits = recorder.limits
        now = time.time()
        for i, p in enumerate(parts):
            event = typed_event(
                p.labels,
                p.attribution,
                p.counts,
                limits,
                now,
                timestamp=p.timestamp,
                status=p.status,
                level=p.level,
                duration_ms=p.duration_ms,
                ttft_ms=p.ttft_ms,
                metadata=p.metadata,
            )
            if event is None:
                rest.append(i)
            else:
                events.append(event)
        if rest:
            items = [parts[i].fields() for i in rest]
            try:
                events += recorder.parse(items)
            except EventError as exc:
                # All-or-nothing for /api/usage; a trace export is answered per span.
                bad = {d.index for d in exc.details}
                names = mapped.spans
                for d in exc.details:
                    if len(messages) < _MAX_MESSAGES:
                        messages.append(f"span {names[rest[d.index]]}: {d.field}: {d.message}")
                good = [item for j, item in enumerate(items) if j not in bad]
                refused = {rest[j] for j in bad}
                rejected += len(bad)
                mapped.outcomes["rejected"] += len(bad)
                recorder.count_rejected("invalid", len(bad))
                if good:
                    events += recorder.parse(good)
        # A refused call is not remembered: a later span of it may still count it.
        calls = [c for i, c in enumerate(mapped.remember) if i not in refused]
        return Prepared(events, mapped.outcomes, messages, rejected, calls)

    async def export(self, body: bytes) -> ExportResult:
        """Record an encoded ExportTraceServiceRequest's GenAI calls; returns once committed."""
        return await self.record(self.prepare(body))

    async def export_batch(self, batch: Batch) -> ExportResult:
        """Record an export's GenAI spans already decoded; returns once committed."""
        return await self.record(self.prepare_batch(batch))

    async def record(self, prepared: Prepared) -> ExportResult:
        """Commit a prepared export's events and count what became of its spans."""
        recorder = self.recorder
        events, outcomes, messages = prepared.events, prepared.outcomes, prepared.messages
        if events:
            try:
                result = await recorder.submit(events)
            except RecorderBusyError as exc:
                recorder.count_rejected("backlog", len(events))
                raise ExportFailed(503, grpc.StatusCode.UNAVAILABLE, str(exc), 1) from None
            except RecorderClosedError:
                recorder.count_rejected("shutting_down", len(events))
                raise ExportFailed(
                    503, grpc.StatusCode.UNAVAILABLE, "the exporter is shutting down; retry", 1
                ) from None
            except LedgerError as exc:
                recorder.count_rejected("ledger_unavailable", len(events))
                raise ExportFailed(
                    503,
                    grpc.StatusCode.UNAVAILABLE,
                    f"spans not stored: {exc}; nothing was recorded, retry",
                    5,
                ) from None
            outcomes["counted"] += result.accepted
            outcomes["duplicate"] += result.duplicates
            self.recent.note(prepared.calls)
        self.spans.add(outcomes)
        message = "; ".join(messages[:_MAX_MESSAGES])
        if len(messages) > _MAX_MESSAGES:
            message += f" (and {len(messages) - _MAX_MESSAGES} more)"
        return ExportResult(prepared.rejected, message)

    # ------------------------------------------------------------------ HTTP

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/traces", self.http_traces, methods=["POST"]),
            Route("/v1/metrics", self.http_metrics, methods=["POST"]),
            Route("/v1/logs", self.http_logs, methods=["POST"]),
        ]

    async def _body(self, request: Request) -> tuple[bytes, str]:
        """The decompressed body and its media type, checked before anything is decoded."""
        limit = self.recorder.limits.max_body_bytes
        mt = decode.check_content_type(request.headers.get("content-type"))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise decode.DecodeError(413, f"request body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise decode.DecodeError(413, f"request body exceeds {limit} bytes")
            chunks.append(chunk)
        return decode.decompress(
            b"".join(chunks), request.headers.get("content-encoding"), limit
        ), mt

    async def _read(self, request: Request, message: type[Message]) -> tuple[Any, str]:
        body, mt = await self._body(request)
        return decode.parse(message, body, mt), mt

    async def http_traces(self, request: Request) -> Response:
        mt = decode.media_type(request.headers.get("content-type"))
        try:
            body, mt = await self._body(request)
            batch = decode.trace_batch(body, mt)
        except decode.DecodeError as exc:
            self.recorder.count_rejected(_REJECT_REASON.get(exc.status, "malformed"))
            return _status(exc.status, exc.message, mt)
        try:
            result = await self.export_batch(batch)
        except ExportFailed as exc:
            return _status(exc.status, exc.message, mt, exc.retry_after)
        response = ExportTraceServiceResponse()
        if result.rejected or result.message:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(
                    rejected_spans=result.rejected, error_message=result.message
                )
            )
        return _message(response, mt)

    async def http_metrics(self, request: Request) -> Response:
        mt = decode.media_type(request.headers.get("content-type"))
        try:
            message, mt = await self._read(request, ExportMetricsServiceRequest)
        except decode.DecodeError as exc:
            return _status(exc.status, exc.message, mt)
        points = _count_points(message)
        response = ExportMetricsServiceResponse(
            partial_success=ExportMetricsPartialSuccess(
                rejected_data_points=points, error_message=NOT_COLLECTED.format(signal="metrics")
            )
        )
        return _message(response, mt)

    async def http_logs(self, request: Request) -> Response:
        mt = decode.media_type(request.headers.get("content-type"))
        try:
            message, mt = await self._read(request, ExportLogsServiceRequest)
        except decode.DecodeError as exc:
            return _status(exc.status, exc.message, mt)
        records = sum(len(sl.log_records) for rl in message.resource_logs for sl in rl.scope_logs)
        response = ExportLogsServiceResponse(
            partial_success=ExportLogsPartialSuccess(
                rejected_log_records=records, error_message=NOT_COLLECTED.format(signal="logs")
            )
        )
        return _message(response, mt)


_REJECT_REASON = {400: "malformed", 413: "too_large", 415: "unsupported_media_type"}


def _count_points(message: ExportMetricsServiceRequest) -> int:
    n = 0
    for rm in message.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    n += len(getattr(metric, kind).data_points)
    return n


def _message(message: Message, mt: str) -> Response:
    if mt != decode.JSON:
        mt = decode.PROTOBUF
    return Response(decode.encode(message, mt), media_type=mt)


def _status(status: int, message: str, mt: str, retry_after: int | None = None) -> Response:
    """An OTLP error answer: a google.rpc.Status in the request's format."""
    from google.rpc.status_pb2 import Status

    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = Status(code=_GRPC_OF_HTTP.get(status, 2), message=message)
    if mt != decode.JSON:
        mt = decode.PROTOBUF
    return Response(decode.encode(body, mt), status_code=status, media_type=mt, headers=headers)


# google.rpc.Code of each HTTP status we answer with.
_GRPC_OF_HTTP = {400: 3, 401: 16, 413: 8, 415: 3, 503: 14}


# ---------------------------------------------------------------------- gRPC


class TraceService:
    """opentelemetry.proto.collector.trace.v1.TraceService/Export over grpc.aio."""

    def __init__(self, receiver: OtlpReceiver, write_tokens: Sequence[str]) -> None:
        self.receiver = receiver
        self.tokens = [t.encode() for t in write_tokens]

    async def Export(  # noqa: N802 - the name the generated servicer gives
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        """The request arrives undecoded (see `start_grpc`): one decode path with HTTP's."""
        if self.tokens and not self._authorised(context):
            self.receiver.recorder.count_rejected("unauthorized")
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "this endpoint needs `authorization: Bearer <token>` metadata",
            )
        try:
            result = await self.receiver.export(request)
        except ExportFailed as exc:
            await context.abort(exc.code, exc.message)
            raise  # abort raises; this line only tells mypy
        response = ExportTraceServiceResponse()
        if result.rejected or result.message:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(
                    rejected_spans=result.rejected, error_message=result.message
                )
            )
        return response

    def _authorised(self, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        import hmac

        given = b""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                raw = value.encode() if isinstance(value, str) else bytes(value)
                scheme, _, token = raw.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
                break
        ok = False
        for token in self.tokens:
            ok |= hmac.compare_digest(given, token)
        return ok and bool(given)


async def start_grpc(
    receiver: OtlpReceiver,
    host: str,
    port: int,
    write_tokens: Sequence[str] = (),
    max_message_bytes: int = 16 * 1024 * 1024,
) -> tuple[grpc.aio.Server, int]:
    """A started grpc.aio server for TraceService on host:port; returns it and its port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 1 << 20),
        ],
    )
    service = TraceService(receiver, write_tokens)
    # The generated registration would decode every request into the full message;
    # ours hands the bytes to `collect`, which decodes only the GenAI spans.
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                service.Export,
                request_deserializer=bytes,
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {host}:{port}")
    await server.start()
    return server, bound
