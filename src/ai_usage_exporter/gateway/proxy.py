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
from starlette.requests import ClientDisconnect, Request
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
from ai_usage_exporter.gateway.apis import APIS, Api, Operation, api_for_request
from ai_usage_exporter.gateway.apis import openai as openai_api
from ai_usage_exporter.gateway.apis._base import JSONResponse
from ai_usage_exporter.gateway.calllog import CallLogger
from ai_usage_exporter.gateway.fallback import (
    fallback_reason_for_exception,
    fallback_reason_for_status,
)
from ai_usage_exporter.gateway.limits import LocalLimiter, RedisLimiter
from ai_usage_exporter.gateway.metrics import FallbackCounter
from ai_usage_exporter.gateway.rejections import Rejection, anthropic_body, gemini_body, openai_body
from ai_usage_exporter.gateway.rejections import headers as rejection_headers
from ai_usage_exporter.gateway.relay import StreamOutcome, StreamRelay
from ai_usage_exporter.gateway.upstream import TRANSPORT_ERRORS, UpstreamClient, response_headers
from ai_usage_exporter.ledger.keys import KeyRecord
from ai_usage_exporter.recorder.recorder import Recorder

log = logging.getLogger("ai_usage_exporter.gateway")

MAX_REQUEST_ID = 128
_NO_PARAMS: Mapping[str, str] = {}


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


# Seconds a client is asked to wait while the ledger cannot be reached.
LEDGER_RETRY_AFTER = 5


def gateway_error(
    status: int,
    message: str,
    *,
    code: str,
    extra: Mapping[str, Any] | None = None,
    api: Api = openai_api,
) -> Response:
    """An error in the client's API's shape, so its SDK surfaces the message."""
    return api.error_response(status, None, message, code=code, extra=extra)


# Each API's spelling of a refusal (gateway/rejections.py), so its SDK surfaces it.
_REJECTION_BODIES = {"openai": openai_body, "anthropic": anthropic_body, "gemini": gemini_body}


def rejection_response(rejection: Rejection, api: Api = openai_api) -> JSONResponse:
    """A refused call in the client's API's error shape, with Retry-After on a 429."""
    return JSONResponse(
        _REJECTION_BODIES[api.NAME](rejection),
        status_code=rejection.status,
        headers=rejection_headers(rejection),
    )


def _credential(api: Api, headers: Sequence[tuple[bytes, bytes]], query: bytes) -> str | None:
    """The caller's secret: where its API puts it first (Gemini's ?key= included), else
    any header a client may carry one in (`admission.credential`)."""
    token = api.client_token(headers, query)
    return token.decode("latin-1") if token is not None else credential(headers)


@dataclass(slots=True)
class _Call:
    """One client request as it moves through the route's upstreams."""

    route: RouteConfig
    api: Api
    op: Operation
    params: Mapping[str, str]
    query: bytes
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
    """The OpenAI, Anthropic and Gemini APIs over the configured upstreams, counted by one recorder."""

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
        self.logger = (
            logger
            if logger is not None
            else CallLogger(secrets=[*self.client.keys, *config.client_tokens])
        )
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

    # ------------------------------------------------------------ client tokens

    def client_token(self, scope: Mapping[str, Any]) -> bytes | None:
        """The client's gateway token, where its API's SDKs put it."""
        api = api_for_request(scope["path"], scope["headers"])
        return api.client_token(scope["headers"], scope.get("query_string", b""))

    def unauthorized(self, scope: Mapping[str, Any], message: str) -> Response:
        """A 401 in the client's API's error shape."""
        api = api_for_request(scope["path"], scope["headers"])
        return api.error_response(
            401,
            None,
            message,
            {"www-authenticate": 'Bearer realm="ai-usage-exporter"'},
            code="unauthorized",
        )

    # ------------------------------------------------------------ one call

    async def handle(
        self,
        request: Request,
        route_name: str | None,
        api_name: str,
        operation: str,
        params: Mapping[str, str] = _NO_PARAMS,
    ) -> Response:
        """Serve one call of `api_name`'s `operation` on a route (None: that API's default)."""
        api = APIS[api_name]
        if route_name is None:
            route_name = self.config.default_for(api_name)
            if route_name is None:
                return gateway_error(
                    404,
                    f"no default gateway route for the {api_name} API; set "
                    f"gateway.default_routes.{api_name} or use /api/ai/<route>/...",
                    code="unknown_route",
                    api=api,
                )
        route = self.config.routes.get(route_name)
        if route is None:
            return gateway_error(
                404,
                f"no gateway route {route_name!r}; configured: {', '.join(sorted(self.config.routes))}",
                code="unknown_route",
                api=api,
            )
        if route.api != api_name:
            return gateway_error(
                404,
                f"gateway route {route_name!r} speaks the {route.api} API, not {api_name}; "
                f"its upstreams: {', '.join(route.upstreams)}",
                code="wrong_api",
                api=api,
            )
        op = api.OPERATIONS.get(operation)
        if op is None:
            return gateway_error(
                404,
                f"the gateway does not relay {operation!r} on the {api_name} API; it relays "
                f"{', '.join(api.OPERATIONS)}",
                code="unknown_operation",
                api=api,
            )
        call_or_error = await self._read_call(request, route, api, op, params)
        if isinstance(call_or_error, Response):
            return call_or_error
        call = call_or_error
        unavailable = self.recorder.writer_error
        if unavailable is not None:
            # Nothing is spent that cannot be recorded: until the ledger is back, refuse
            # before any upstream is called. Clients (OpenAI's SDKs among them) retry a 503.
            refusal = gateway_error(
                503,
                f"usage cannot be recorded now ({unavailable}); retry",
                code="ledger_unavailable",
            )
            refusal.headers["Retry-After"] = str(LEDGER_RETRY_AFTER)
            return refusal
        admitted = await self.admission.admit(
            _credential(api, call.headers, call.query), route.name, call.model
        )
        if isinstance(admitted, Rejection):
            refused = rejection_response(admitted, api)
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
            operation=op.recorded or op.name,
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
            api=api,
        )
        response.headers["x-request-id"] = call.request_id
        return response

    async def _read_call(
        self,
        request: Request,
        route: RouteConfig,
        api: Api,
        op: Operation,
        params: Mapping[str, str],
    ) -> _Call | Response:
        limit = self.recorder.limits.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        receive = request.receive
        # Read as it comes, so an oversized body is refused without being held whole
        # (`Request.stream`'s loop, without its async generator).
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    return gateway_error(
                        413, f"request body exceeds {limit} bytes", code="too_large", api=api
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return gateway_error(400, f"malformed JSON body: {exc}", code="malformed", api=api)
        if not isinstance(payload, dict):
            return gateway_error(
                400,
                f"the body must be a JSON object, got {type(payload).__name__}",
                code="malformed",
                api=api,
            )
        model = api.model_of(payload, params)
        if not isinstance(model, str) or not model:
            shown = orjson.dumps(model).decode()[:60]
            return gateway_error(
                400,
                f"model: expected a non-empty string, got {shown}",
                code="invalid_model",
                api=api,
            )
        headers = request.scope["headers"]
        given_rid = tenant = None
        for name, value in headers:
            # The first of each, as `request.headers.get` would answer.
            if name == b"x-request-id":
                if given_rid is None:
                    given_rid = value
            elif name == b"x-tenant" and tenant is None:
                tenant = value
        rid = given_rid.decode("latin-1").strip() if given_rid is not None else ""
        if not rid or len(rid) > MAX_REQUEST_ID or not rid.isprintable():
            rid = uuid.uuid4().hex
        user = payload.get("user")
        return _Call(
            route=route,
            api=api,
            op=op,
            params=params,
            query=request.scope.get("query_string", b""),
            model=model,
            stream=api.wants_stream(op, payload, params),
            payload=payload,
            body=body,
            request_id=rid,
            headers=list(headers),
            client_tenant=(tenant.decode("latin-1") or None) if tenant is not None else None,
            client_user=user if isinstance(user, str) and user else None,
        )

    async def _attempt(
        self, call: _Call, i: int, up: UpstreamConfig, nxt: UpstreamConfig | None
    ) -> Response | None:
        """Try one upstream: a response to serve, or None after recording why it failed."""
        out = call.api.outgoing(
            call.op, call.payload, call.body, call.model, call.stream, call.params, call.query, up
        )
        model = out.model
        started = time.perf_counter()
        started_at = time.time()
        try:
            upstream = await self.client.send(
                up, "POST", out.path, call.headers, out.body, query=out.query
            )
        except TRANSPORT_ERRORS as exc:
            self._failed(call, i, up, nxt, model, started, started_at, exc=exc)
            return None
        status = upstream.status
        if fallback_reason_for_status(status) is not None:
            upstream.close()
            self._failed(call, i, up, nxt, model, started, started_at, status=status)
            return None
        framer = (
            call.api.stream_framer(upstream.headers.get("content-type", ""), call.params)
            if call.stream and status < 400 and call.op.stream_format is not None
            else None
        )
        if framer is not None:
            assert call.op.stream_format is not None
            body = upstream.content.iter_any()
            try:
                # A stall or a drop before the first byte may still fall back.
                first = await anext(body, b"")
            except TRANSPORT_ERRORS as exc:
                upstream.close()
                self._failed(call, i, up, nxt, model, started, started_at, exc=exc)
                return None
            outcome = StreamOutcome(
                StreamFolder(call.op.stream_format), started, first_byte=time.perf_counter()
            )

            def done(outcome: StreamOutcome) -> None:
                self._served_stream(call, i, up, model, started_at, status, outcome)

            return StreamRelay(
                upstream,
                body,
                first,
                status_code=status,
                headers=response_headers(upstream.raw_headers),
                outcome=outcome,
                strip_usage=out.strip_usage,
                on_done=done,
                framer=framer,
                stream_error=call.api.stream_error,
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
            "operation": call.op.recorded,
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
        if call.op.recorded is not None:
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
            usage, served = call.api.usage_of(parsed)
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
        if outcome.error is not None:
            # The upstream broke off first; the client leaving after that is no news.
            error_type = error_type_for_exception(outcome.error)
        elif outcome.stream_error is not None:
            error_type = outcome.stream_error
        elif outcome.client_gone and not folder.finished:
            error_type = CANCELLED
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
        if call.op.recorded is None:
            # Relayed for the client, billed nothing: logged at debug, never recorded.
            self.logger.log(
                "debug",
                "gateway call (not recorded)",
                route=call.route.name,
                upstream=event["metadata"]["upstream"],
                operation=call.op.name,
                http_status=status,
                request_id=call.request_id,
            )
            return
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
                # The ledger's word (`embedding`), not the route's plural.
                operation=call.op.recorded or call.op.name,
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
        """GET /v1/models: the OpenAI list, or Anthropic's to a client sending anthropic-version."""
        api_name = "anthropic" if "anthropic-version" in request.headers else "openai"
        route_name = self.config.default_for(api_name)
        if route_name is None:
            return gateway_error(
                404,
                f"no default gateway route for the {api_name} API to list models from",
                code="unknown_route",
                api=APIS[api_name],
            )
        route = self.config.routes[route_name]
        api = APIS[api_name]
        admitted = await self.admission.admit(
            _credential(api, request.scope["headers"], request.scope.get("query_string", b"")),
            route.name,
            None,
        )
        if isinstance(admitted, Rejection):
            return rejection_response(admitted, api)
        if api_name == "anthropic":
            return await self._anthropic_models(request, route)
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

    async def _anthropic_models(self, request: Request, route: RouteConfig) -> Response:
        """Anthropic's list as the route's first upstream that answers sends it (pages and
        all: the client's `limit`, `after_id` and `before_id` go with it)."""
        api = APIS["anthropic"]
        failures: list[dict[str, Any]] = []
        query = request.scope.get("query_string", b"").decode("latin-1")
        for name in route.upstreams:
            up = self.config.upstreams[name]
            try:
                resp = await self.client.send(
                    up, "GET", "/v1/models", request.scope["headers"], query=query
                )
                try:
                    data = await resp.read()
                finally:
                    resp.close()
            except TRANSPORT_ERRORS as exc:
                failures.append({"upstream": up.name, "error_type": error_type_for_exception(exc)})
                continue
            if fallback_reason_for_status(resp.status) is not None:
                failures.append(
                    {"upstream": up.name, "error_type": error_type_for_status(resp.status)}
                )
                continue
            return BodyResponse(data, resp.status, response_headers(resp.raw_headers))
        return gateway_error(
            502,
            "no upstream listed its models",
            code="upstreams_failed",
            extra={"attempts": failures},
            api=api,
        )


def _json_or_text(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", "replace")
