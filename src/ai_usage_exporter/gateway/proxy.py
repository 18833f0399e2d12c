"""The gateway: try a route's upstreams in order, relay the one that answers, record every attempt.

Each attempt is recorded once through the recorder (parse -> price -> commit), the
same path as ``POST /api/usage``: the served one with its usage, duration and time to
first token; a failed one as an error with no tokens under its own provider. Records
are queued (`Recorder.record`) after the client has its answer, so the ledger never
holds up a response.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from ai_usage_exporter.config.gateway import GatewayConfig, RouteConfig, UpstreamConfig
from ai_usage_exporter.core.errortypes import (
    CANCELLED,
    error_type_for_exception,
    error_type_for_status,
)
from ai_usage_exporter.core.events.model import EventError
from ai_usage_exporter.core.redact import redact_text
from ai_usage_exporter.core.shapes.streams import StreamFolder
from ai_usage_exporter.gateway.admission import Admitter, credential
from ai_usage_exporter.gateway.admission_metrics import AdmissionCounters
from ai_usage_exporter.gateway.calllog import CallLogger
from ai_usage_exporter.gateway.fallback import (
    fallback_reason_for_exception,
    fallback_reason_for_status,
)
from ai_usage_exporter.gateway.limits import LocalLimiter, RedisLimiter
from ai_usage_exporter.gateway.metrics import FallbackCounter
from ai_usage_exporter.gateway.rejections import Rejection, openai_body
from ai_usage_exporter.gateway.rejections import headers as rejection_headers
from ai_usage_exporter.gateway.relay import StreamOutcome, StreamRelay
from ai_usage_exporter.gateway.upstream import TRANSPORT_ERRORS, UpstreamClient, response_headers
from ai_usage_exporter.ledger.keys import KeyRecord
from ai_usage_exporter.recorder.recorder import Recorder

log = logging.getLogger("ai_usage_exporter.gateway")

# Operation name -> (path under the upstream's base_url, stream format).
OPERATIONS: dict[str, tuple[str, str | None]] = {
    "chat": ("/chat/completions", "openai_chat"),
    "responses": ("/responses", "openai_responses"),
    "embeddings": ("/embeddings", None),
}
# The `operation` an event records, in the words the SDK uses for the same calls
# (OPERATION_CHAT, OPERATION_EMBEDDING), so one report or label covers both entry points.
RECORDED_OPERATION: dict[str, str] = {
    "chat": "chat",
    "responses": "chat",
    "embeddings": "embedding",
}
MAX_REQUEST_ID = 128


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class BodyResponse(Response):
    """An upstream's whole body with its headers, already in ASGI's raw form."""

    def __init__(
        self,
        body: bytes,
        status_code: int,
        headers: list[tuple[bytes, bytes]],
        background: BackgroundTask | None = None,
    ) -> None:
        self.body = body
        self.status_code = status_code
        self.background = background
        self.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]


def gateway_error(
    status: int, message: str, *, code: str, extra: Mapping[str, Any] | None = None
) -> JSONResponse:
    """An error in OpenAI's shape, so SDK clients surface the message."""
    body: dict[str, Any] = {"message": message, "type": "gateway_error", "code": code}
    if extra:
        body.update(extra)
    return JSONResponse({"error": body}, status_code=status)


def openai_rejection(rejection: Rejection) -> JSONResponse:
    """A refused call in OpenAI's error shape, with Retry-After on a 429."""
    return JSONResponse(
        openai_body(rejection), status_code=rejection.status, headers=rejection_headers(rejection)
    )


@dataclass(slots=True)
class _Call:
    """One client request as it moves through the route's upstreams."""

    route: RouteConfig
    operation: str
    model: str
    stream: bool
    payload: dict[str, Any]
    body: bytes
    request_id: str
    headers: list[tuple[bytes, bytes]]
    failures: list[dict[str, Any]] = field(default_factory=list)
    # The gateway key it was admitted with; None for a client token or an open gateway.
    key: KeyRecord | None = None
    # What the client said about itself; kept in metadata, never as attribution.
    client_tenant: str | None = None
    client_user: str | None = None


# A served call waiting to be recorded: call, event, HTTP status, error_type, body.
_Served = tuple[_Call, dict[str, Any], int, str | None, bytes | None]


class Gateway:
    """OpenAI-compatible routes over the configured upstreams, counted by one recorder."""

    def __init__(
        self,
        config: GatewayConfig,
        recorder: Recorder,
        *,
        keys: Mapping[str, str | None],
        logger: CallLogger | None = None,
        admitter: Admitter | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.client = UpstreamClient(config, keys)
        self.logger = logger if logger is not None else CallLogger(secrets=self.client.keys)
        self.fallbacks = FallbackCounter()
        self.admission_counters = AdmissionCounters()
        self._served: list[_Served] = []
        recorder.registry.register(self.fallbacks)
        recorder.registry.register(self.admission_counters)
        # `clock` (epoch seconds) decides budget periods and expiry; tests move it.
        self.admission = admitter if admitter is not None else self.make_admitter(clock)
        recorder.add_budget_source(self.admission.budget_rows)

    def make_admitter(self, clock: Callable[[], float] | None = None) -> Admitter:
        """The admission step this config describes, counting into this gateway's metrics."""
        rl = self.config.rate_limits
        limiter: LocalLimiter | RedisLimiter = (
            RedisLimiter(
                rl.redis,
                prefix=rl.prefix,
                fail_open=rl.on_redis_error == "open",
                on_error=self.admission_counters.limiter_error,
            )
            if rl.redis is not None
            else LocalLimiter()
        )
        return Admitter(
            self.recorder.ledger,
            client_tokens=self.config.client_tokens,
            limiter=limiter,
            key_cache_s=self.config.key_cache_s,
            on_reject=lambda r: self.admission_counters.rejected(r.reason),
            clock=clock if clock is not None else time.time,
        )

    async def aclose(self) -> None:
        self._flush_served()
        await self.admission.aclose()
        await self.client.aclose()
        for collector in (self.fallbacks, self.admission_counters):
            try:
                self.recorder.registry.unregister(collector)
            except KeyError:
                pass

    # ------------------------------------------------------------ one call

    async def handle(self, request: Request, route_name: str, operation: str) -> Response:
        route = self.config.routes.get(route_name)
        if route is None:
            return gateway_error(
                404,
                f"no gateway route {route_name!r}; configured: {', '.join(sorted(self.config.routes))}",
                code="unknown_route",
            )
        call_or_error = await self._read_call(request, route, operation)
        if isinstance(call_or_error, Response):
            return call_or_error
        call = call_or_error
        admitted = await self.admission.admit(credential(call.headers), route.name, call.model)
        if isinstance(admitted, Rejection):
            refused = openai_rejection(admitted)
            refused.headers["x-request-id"] = call.request_id
            return refused
        call.key = admitted.key
        upstreams = [self.config.upstreams[n] for n in route.upstreams]
        for i, up in enumerate(upstreams, start=1):
            nxt = upstreams[i] if i < len(upstreams) else None
            response = await self._attempt(call, i, up, nxt)
            if response is not None:
                response.headers["x-request-id"] = call.request_id
                return response
        self.logger.log(
            "error",
            "gateway call failed on every upstream",
            route=route.name,
            operation=operation,
            model=call.model,
            request_id=call.request_id,
            attempts=call.failures,
        )
        names = "; ".join(
            f"{f['upstream']}: {f['detail']} ({f['error_type']})" for f in call.failures
        )
        response = gateway_error(
            502,
            f"every upstream of route {route.name!r} failed: {names}",
            code="upstreams_failed",
            extra={"attempts": call.failures},
        )
        response.headers["x-request-id"] = call.request_id
        return response

    async def _read_call(
        self, request: Request, route: RouteConfig, operation: str
    ) -> _Call | Response:
        limit = self.recorder.limits.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        # Read as it comes, so an oversized body is refused without being held whole.
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return gateway_error(413, f"request body exceeds {limit} bytes", code="too_large")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return gateway_error(400, f"malformed JSON body: {exc}", code="malformed")
        if not isinstance(payload, dict):
            return gateway_error(
                400,
                f"the body must be a JSON object, got {type(payload).__name__}",
                code="malformed",
            )
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            shown = orjson.dumps(model).decode()[:60]
            return gateway_error(
                400, f"model: expected a non-empty string, got {shown}", code="invalid_model"
            )
        rid = request.headers.get("x-request-id", "").strip()
        if not rid or len(rid) > MAX_REQUEST_ID or not rid.isprintable():
            rid = uuid.uuid4().hex
        user = payload.get("user")
        return _Call(
            route=route,
            operation=operation,
            model=model,
            stream=payload.get("stream") is True and operation != "embeddings",
            payload=payload,
            body=body,
            request_id=rid,
            headers=list(request.scope["headers"]),
            client_tenant=request.headers.get("x-tenant") or None,
            client_user=user if isinstance(user, str) and user else None,
        )

    def _outgoing(self, call: _Call, up: UpstreamConfig) -> tuple[bytes, str, bool]:
        """The body for this upstream, the model it names, and whether to strip a usage chunk."""
        model = up.upstream_model(call.model)
        changes: dict[str, Any] = {}
        if model != call.model:
            changes["model"] = model
        strip = False
        if call.stream and call.operation == "chat":
            options = call.payload.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                base = options if isinstance(options, dict) else {}
                changes["stream_options"] = {**base, "include_usage": True}
                strip = True
        if not changes:
            # Unchanged requests go upstream byte for byte.
            return call.body, model, strip
        return orjson.dumps({**call.payload, **changes}), model, strip

    async def _attempt(
        self, call: _Call, i: int, up: UpstreamConfig, nxt: UpstreamConfig | None
    ) -> Response | None:
        """Try one upstream: a response to serve, or None after recording why it failed."""
        path, fmt = OPERATIONS[call.operation]
        content, model, strip = self._outgoing(call, up)
        started = time.perf_counter()
        started_at = time.time()
        try:
            upstream = await self.client.send(up, "POST", path, call.headers, content)
        except TRANSPORT_ERRORS as exc:
            self._failed(call, i, up, nxt, model, started, started_at, exc=exc)
            return None
        status = upstream.status
        if fallback_reason_for_status(status) is not None:
            upstream.close()
            self._failed(call, i, up, nxt, model, started, started_at, status=status)
            return None
        is_sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
        if call.stream and fmt is not None and is_sse:
            body = upstream.content.iter_any()
            try:
                # A stall or a drop before the first byte may still fall back.
                first = await anext(body, b"")
            except TRANSPORT_ERRORS as exc:
                upstream.close()
                self._failed(call, i, up, nxt, model, started, started_at, exc=exc)
                return None
            outcome = StreamOutcome(StreamFolder(fmt), started, first_byte=time.perf_counter())

            async def done(outcome: StreamOutcome) -> None:
                self._served_stream(call, i, up, model, started_at, status, outcome)

            return StreamRelay(
                upstream,
                body,
                first,
                status_code=status,
                headers=response_headers(upstream.raw_headers),
                outcome=outcome,
                strip_usage=strip,
                on_done=done,
            )
        try:
            data = await upstream.read()
        except TRANSPORT_ERRORS as exc:
            upstream.close()
            self._failed(call, i, up, nxt, model, started, started_at, exc=exc)
            return None
        upstream.release()
        duration_ms = (time.perf_counter() - started) * 1000
        return BodyResponse(
            data,
            status,
            response_headers(upstream.raw_headers),
            BackgroundTask(
                self._served_body, call, i, up, model, started_at, status, data, duration_ms
            ),
        )

    # ------------------------------------------------------------ recording

    def _event(
        self,
        call: _Call,
        i: int,
        up: UpstreamConfig,
        model: str,
        started_at: float,
        duration_ms: float,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "upstream": up.name,
            "attempt": i,
            "request_id": call.request_id,
        }
        if call.client_tenant is not None:
            metadata["client_tenant"] = call.client_tenant[:256]
        if call.client_user is not None:
            metadata["client_user"] = call.client_user[:256]
        event: dict[str, Any] = {
            "provider": up.provider,
            "model": model,
            "operation": RECORDED_OPERATION[call.operation],
            "service": call.route.name,
            "duration_ms": round(duration_ms, 3),
            "timestamp": started_at,
            "idempotency_key": f"{call.request_id}:{i}",
            "metadata": metadata,
        }
        key = call.key
        if key is not None:
            # The key's own attribution: what the caller says cannot override it.
            event["key"] = key.name
            if key.service is not None:
                event["service"] = key.service
            if key.tenant is not None:
                event["tenant"] = key.tenant
            if key.user is not None:
                event["user"] = key.user
        return event

    def _failed(
        self,
        call: _Call,
        i: int,
        up: UpstreamConfig,
        nxt: UpstreamConfig | None,
        model: str,
        started: float,
        started_at: float,
        *,
        exc: BaseException | None = None,
        status: int | None = None,
    ) -> None:
        if status is not None:
            error_type = error_type_for_status(status)
            reason = fallback_reason_for_status(status) or error_type
            detail = f"HTTP {status}"
        else:
            assert exc is not None
            error_type = error_type_for_exception(exc)
            reason = fallback_reason_for_exception(exc)
            # aiohttp messages name the host and the failure, never headers; redact anyway.
            detail = redact_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        duration_ms = (time.perf_counter() - started) * 1000
        failure = {
            "upstream": up.name,
            "provider": up.provider,
            "status": status,
            "error_type": error_type,
            "detail": detail,
        }
        call.failures.append(failure)
        event = self._event(call, i, up, model, started_at, duration_ms)
        event.update(status="error", error_type=error_type, level="error")
        self._record(event)
        if nxt is not None:
            self.fallbacks.inc(call.route.name, up.name, nxt.name, reason)
            self.logger.log(
                "warn",
                "gateway fallback",
                route=call.route.name,
                upstream=up.name,
                next_upstream=nxt.name,
                reason=reason,
                model=model,
                status=status,
                error_type=error_type,
                detail=detail,
                duration_ms=round(duration_ms, 3),
                request_id=call.request_id,
            )

    async def _served_body(
        self,
        call: _Call,
        i: int,
        up: UpstreamConfig,
        model: str,
        started_at: float,
        status: int,
        data: bytes,
        duration_ms: float,
    ) -> None:
        # A coroutine, so Starlette runs it on the loop after the response went out
        # rather than handing each call to a worker thread (a thread hop and GIL
        # contention per call, for microseconds of work).
        usage: Any = None
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            usage = parsed.get("usage")
            served = parsed.get("model")
            if isinstance(served, str) and served and status < 400:
                model = served
        event = self._event(call, i, up, model, started_at, duration_ms)
        self._finish(call, event, status, usage if isinstance(usage, dict) else None, None, data)

    def _served_stream(
        self,
        call: _Call,
        i: int,
        up: UpstreamConfig,
        model: str,
        started_at: float,
        status: int,
        outcome: StreamOutcome,
    ) -> None:
        folder = outcome.folder
        if folder.model:
            model = folder.model
        ended = outcome.ended if outcome.ended is not None else time.perf_counter()
        event = self._event(call, i, up, model, started_at, (ended - outcome.started) * 1000)
        if outcome.first_byte is not None:
            event["ttft_ms"] = round((outcome.first_byte - outcome.started) * 1000, 3)
        error_type = None
        if outcome.client_gone and not folder.finished:
            error_type = CANCELLED
        elif outcome.error is not None:
            error_type = error_type_for_exception(outcome.error)
        self._finish(call, event, status, folder.usage, error_type, None)

    def _finish(
        self,
        call: _Call,
        event: dict[str, Any],
        status: int,
        usage: dict[str, Any] | None,
        error_type: str | None,
        response_body: bytes | None,
    ) -> None:
        if status >= 400:
            error_type = error_type or error_type_for_status(status)
        if error_type is not None:
            event.update(status="error", error_type=error_type, level="error")
        if usage is not None:
            event["usage"] = usage
        # Recorded and logged at the end of this loop turn with every other call that
        # finished in it: one parse, one queue submission and one log write per batch.
        self._served.append((call, event, status, error_type, response_body))
        if len(self._served) == 1:
            asyncio.get_running_loop().call_soon(self._flush_served)

    def _flush_served(self) -> None:
        served, self._served = self._served, []
        if not served:
            return
        costs = self._record_many([event for _, event, _, _, _ in served])
        lines: list[str] = []
        for (call, event, status, error_type, response_body), cost in zip(
            served, costs, strict=True
        ):
            if call.key is not None and cost is not None:
                self.admission.charge(
                    call.key, cost["input_tokens"] + cost["output_tokens"], cost["cost_usd"]
                )
            line = self.logger.line(
                "error" if error_type else "info",
                "gateway call",
                route=call.route.name,
                **({"key": call.key.name} if call.key is not None else {}),
                upstream=event["metadata"]["upstream"],
                provider=event["provider"],
                model=event["model"],
                operation=call.operation,
                stream=call.stream,
                status=event.get("status", "ok"),
                http_status=status,
                error_type=error_type,
                duration_ms=event["duration_ms"],
                ttft_ms=event.get("ttft_ms"),
                request_id=call.request_id,
                **(cost or {}),
            )
            if line is not None:
                lines.append(line)
            if self.logger.detailed:
                line = self.logger.line(
                    "debug",
                    "gateway call bodies",
                    request_id=call.request_id,
                    request=_json_or_text(call.body),
                    response=_json_or_text(response_body) if response_body is not None else None,
                )
                if line is not None:
                    lines.append(line)
        self.logger.write(lines)

    def _record(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Queue one event; the tokens and cost for the log line, or None if it was refused."""
        return self._record_many([event])[0]

    def _record_many(self, events: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Queue events; for each, the tokens and cost for its log line, or None if refused."""
        try:
            parsed = self.recorder.parse(events)
        except EventError as exc:
            if len(events) > 1:
                # Keep the good ones: find the odd one out one by one.
                return [self._record(e) for e in events]
            # An upstream's odd usage object must not cost the client its answer.
            log.error("gateway call not recorded: %s", exc.message)
            return [None]
        try:
            priced = self.recorder.enqueue(parsed)
        except Exception as exc:  # the recorder is closing or its backlog is full
            log.error("gateway call not recorded: %s", exc)
            return [None] * len(events)
        return [
            {
                "input_tokens": e.input_tokens,
                "output_tokens": e.output_tokens,
                "cached_input_tokens": e.cached_input_tokens,
                "reasoning_tokens": e.reasoning_tokens,
                "cost_usd": getattr(cost, "total", None),
            }
            for e, cost in priced
        ]

    # ------------------------------------------------------------ /v1/models

    async def models(self, request: Request) -> Response:
        route = self.config.routes[self.config.default_route]
        admitted = await self.admission.admit(
            credential(request.scope["headers"]), route.name, None
        )
        if isinstance(admitted, Rejection):
            return openai_rejection(admitted)
        ups = [self.config.upstreams[n] for n in route.upstreams]
        if self.config.models_endpoint == "proxy":
            ups = ups[:1]
        lists: list[Sequence[Any]] = []
        failures: list[dict[str, Any]] = []
        for up in ups:
            try:
                resp = await self.client.send(up, "GET", "/models", request.scope["headers"])
                try:
                    data = await resp.read()
                finally:
                    resp.close()
            except TRANSPORT_ERRORS as exc:
                failures.append({"upstream": up.name, "error_type": error_type_for_exception(exc)})
                continue
            if self.config.models_endpoint == "proxy":
                return BodyResponse(data, resp.status, response_headers(resp.raw_headers))
            try:
                listed = orjson.loads(data).get("data") if resp.status == 200 else None
            except (orjson.JSONDecodeError, AttributeError):
                listed = None
            if isinstance(listed, list):
                lists.append(listed)
            else:
                failures.append(
                    {"upstream": up.name, "error_type": error_type_for_status(resp.status)}
                )
        if not lists:
            return gateway_error(
                502,
                "no upstream listed its models",
                code="upstreams_failed",
                extra={"attempts": failures},
            )
        seen: set[str] = set()
        merged: list[Any] = []
        for listed in lists:
            for item in listed:
                mid = item.get("id") if isinstance(item, dict) else None
                if isinstance(mid, str) and mid not in seen:
                    seen.add(mid)
                    merged.append(item)
        return JSONResponse({"object": "list", "data": merged})


def _json_or_text(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", "replace")
