"""Starlette routes: parse the request, hand it to the recorder, answer. No formatting here."""

from __future__ import annotations

import gzip
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ai_usage_exporter.config.reconcile import ReconcileSettings
from ai_usage_exporter.core.budgets import BUDGET_FIELDS
from ai_usage_exporter.core.events.model import EventError
from ai_usage_exporter.core.reports import FILTERS as REPORT_FILTERS
from ai_usage_exporter.core.reports import REPORTS, build_report, render_csv, window
from ai_usage_exporter.core.timeseries import ParamError, parse_scope
from ai_usage_exporter.core.timeseries import parse_query as parse_timeseries_query
from ai_usage_exporter.ledger import LedgerError
from ai_usage_exporter.otlp.receiver import OtlpReceiver, start_grpc
from ai_usage_exporter.recorder.recorder import Recorder, RecorderBusyError, RecorderClosedError
from ai_usage_exporter.server.auth import BearerAuthMiddleware
from ai_usage_exporter.server.dashboard import dashboard_routes
from ai_usage_exporter.server.dashboard.capture import capture_routes
from ai_usage_exporter.server.openapi import openapi_document

if TYPE_CHECKING:
    from ai_usage_exporter.gateway.proxy import Gateway

log = logging.getLogger("ai_usage_exporter.http")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TEXT = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# Seconds a client is asked to wait when the ledger cannot be reached (503).
LEDGER_RETRY_AFTER = 5
# Query parameters GET /api/reports/<name> takes.
_REPORT_PARAMS = ("format", "limit", "scope", "since", "until", "workflow", *REPORT_FILTERS)
JSON_TYPES = ("application/json", "text/json")
NDJSON_TYPES = (
    "application/x-ndjson",
    "application/jsonl",
    "application/jsonlines",
    "application/x-jsonlines",
)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(
    status: int,
    message: str,
    details: Sequence[dict[str, Any]] | None = None,
    *,
    retry_after: int | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"message": message}
    if details is not None:
        body["details"] = list(details)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json_body(body: bytes, media_type: str) -> list[Any]:
    """The request's events as JSON values; raises ValueError naming where parsing failed."""
    if media_type in NDJSON_TYPES:
        items: list[Any] = []
        for lineno, line in enumerate(body.split(b"\n"), start=1):
            if line.strip():
                try:
                    items.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"line {lineno}: {exc}") from None
        return items
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
    return value if isinstance(value, list) else [value]


def create_app(
    recorder: Recorder,
    *,
    write_tokens: Sequence[str] = (),
    read_tokens: Sequence[str] = (),
    close_recorder: bool = False,
    gateway: Gateway | None = None,
    gateway_tokens: Sequence[str] = (),
    reconcile: ReconcileSettings | None = None,
    otlp_grpc_port: int | None = None,
    otlp_grpc_host: str = "127.0.0.1",
) -> Starlette:
    """The HTTP API over one recorder. With `close_recorder`, shutdown drains and closes it.

    With a `gateway`, its OpenAI-compatible routes are served too, behind `gateway_tokens`;
    with `reconcile` settings, the stored provider bills as `/api/reports/reconcile`.
    OTLP/HTTP is always served (/v1/traces); with `otlp_grpc_port` the OTLP/gRPC
    TraceService runs beside it in the same loop, behind the same write tokens.
    """
    limits = recorder.limits
    otlp = OtlpReceiver(recorder)

    async def post_usage(request: Request) -> Response:
        media_type = (
            request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        )
        if media_type not in JSON_TYPES and media_type not in NDJSON_TYPES:
            recorder.count_rejected("unsupported_media_type")
            return error_response(
                415,
                f"unsupported content type {media_type!r}; send application/json (an event or an "
                "array of events) or application/x-ndjson (one event per line)",
            )
        try:
            body = await _read_body(request, limits.max_body_bytes)
        except _BodyTooLarge:
            recorder.count_rejected("too_large")
            return error_response(413, f"request body exceeds {limits.max_body_bytes} bytes")
        try:
            items = _parse_json_body(body, media_type)
        except ValueError as exc:
            recorder.count_rejected("malformed")
            return error_response(400, f"malformed JSON: {exc}")
        if not items:
            return error_response(
                422, "no events in the request", [{"index": -1, "field": "", "message": "empty"}]
            )
        try:
            events = recorder.parse(items)
        except EventError as exc:
            recorder.count_rejected("invalid", len(items))
            return error_response(422, exc.message, [d.as_dict() for d in exc.details])
        try:
            result = await recorder.submit(events)
        except RecorderBusyError as exc:
            recorder.count_rejected("backlog", len(items))
            return error_response(503, str(exc), retry_after=1)
        except RecorderClosedError:
            recorder.count_rejected("shutting_down", len(items))
            return error_response(503, "the exporter is shutting down; retry", retry_after=1)
        except LedgerError as exc:
            recorder.count_rejected("ledger_unavailable", len(items))
            return error_response(
                503,
                f"events not stored: {exc}; nothing was recorded, retry",
                retry_after=LEDGER_RETRY_AFTER,
            )
        return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates})

    async def exposition(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        if "application/openmetrics-text" in accept:
            body, media_type = await run_in_threadpool(recorder.openmetrics), OPENMETRICS_TEXT
        else:
            body, media_type = await run_in_threadpool(recorder.exposition), PROMETHEUS_TEXT
        if "gzip" in request.headers.get("accept-encoding", "") and len(body) > 1024:
            return Response(
                gzip.compress(body, compresslevel=1),
                media_type=media_type,
                headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
            )
        return Response(body, media_type=media_type)

    async def api_metrics(request: Request) -> Response:
        formats = request.query_params.getlist("format")
        if len(formats) > 1:
            return error_response(400, f"give format once, got {', '.join(map(repr, formats))}")
        fmt = formats[0] if formats else "json"
        if fmt not in ("json", "prometheus"):
            return error_response(400, f"unknown format {fmt!r}; use json or prometheus")
        # Checked for both formats, so a bad query never passes silently.
        given = request.query_params.getlist("limit")
        raw_limit = given[0] if len(given) == 1 else "100" if not given else ",".join(given)
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 10_000:
            return error_response(
                400, f"limit must be an integer from 1 to 10000, got {raw_limit!r}"
            )
        try:
            scope = parse_scope(request.query_params.getlist("scope"))
        except ParamError as exc:
            return error_response(400, str(exc), [exc.as_dict()])
        if fmt == "prometheus":
            return await (fleet_exposition(request) if scope == "fleet" else exposition(request))
        try:
            view = await run_in_threadpool(recorder.view, int(raw_limit), scope)
        except LedgerError as exc:
            return error_response(503, str(exc), retry_after=LEDGER_RETRY_AFTER)
        return JSONResponse(view)

    async def fleet_exposition(request: Request) -> Response:
        try:
            body = await run_in_threadpool(recorder.fleet_exposition)
        except LedgerError as exc:
            return error_response(503, str(exc), retry_after=LEDGER_RETRY_AFTER)
        return Response(body, media_type=PROMETHEUS_TEXT)

    async def budget_usage(request: Request) -> Response:
        """What the ledger holds since `since` for one budget key: the SDK's starting point."""
        q = request.query_params
        raw_since = q.get("since", "")
        try:
            since = float(raw_since)
        except ValueError:
            since = math.nan
        if not math.isfinite(since):
            return error_response(400, f"since must be epoch seconds, got {raw_since!r}")
        field = q.get("field")
        if field is not None and field not in BUDGET_FIELDS:
            return error_response(
                400, f"field must be one of {', '.join(sorted(BUDGET_FIELDS))}, got {field!r}"
            )
        value = q.get("value")
        try:
            rows = await run_in_threadpool(recorder.ledger.usage_since, since, field, value)
        except LedgerError as exc:
            return error_response(503, str(exc), retry_after=LEDGER_RETRY_AFTER)
        return JSONResponse(
            {
                "since": since,
                "field": field,
                "value": value,
                "tokens": sum(r[0] for r in rows.values()),
                "usd": sum(r[1] for r in rows.values()),
                "requests": sum(r[2] for r in rows.values()),
            }
        )

    async def api_timeseries(request: Request) -> Response:
        params = {k: request.query_params.getlist(k) for k in request.query_params.keys()}
        try:
            query = parse_timeseries_query(params, time.time())
        except ParamError as exc:
            return error_response(400, str(exc), [exc.as_dict()])
        try:
            body = await run_in_threadpool(recorder.timeseries, query)
        except LedgerError as exc:
            return error_response(503, str(exc), retry_after=LEDGER_RETRY_AFTER)
        return JSONResponse(body)

    async def api_report(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in REPORTS:
            return error_response(404, f"no report {name!r}; reports: {', '.join(REPORTS)}")
        params = request.query_params
        for key in params.keys():
            if key not in _REPORT_PARAMS:
                return error_response(
                    400, f"unknown parameter {key!r}; known: {', '.join(_REPORT_PARAMS)}"
                )
            if len(params.getlist(key)) > 1:
                return error_response(400, f"give {key} once, got {params.getlist(key)!r}")
        fmt = params.get("format", "json")
        if fmt not in ("json", "csv"):
            return error_response(400, f"format: must be json or csv, got {fmt!r}")
        raw_limit = params.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 10_000:
            return error_response(
                400, f"limit must be an integer from 1 to 10000, got {raw_limit!r}"
            )
        try:
            w = window(params.get("since"), params.get("until"), time.time())
            scope = parse_scope(params.getlist("scope"))
        except ParamError as exc:
            return error_response(400, str(exc), [exc.as_dict()])
        try:
            await run_in_threadpool(recorder.adopt_unadopted)
            body = await run_in_threadpool(
                build_report, recorder.ledger, name, w,
                workflow=params.get("workflow"), limit=int(raw_limit),
                instance=recorder.ledger.scope_instance(scope),
                filters={k: params[k] for k in REPORT_FILTERS if k in params},
                model_name=recorder.prices.canonical_model,
                suggest=recorder.prices.suggest_model,
            )  # fmt: skip
        except LedgerError as exc:
            return error_response(503, str(exc), retry_after=LEDGER_RETRY_AFTER)
        body["scope"] = scope
        if fmt == "csv":
            return Response(
                render_csv(body),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
            )
        return JSONResponse(body)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await run_in_threadpool(recorder.check_ready)
        except LedgerError as exc:
            return error_response(503, str(exc), retry_after=LEDGER_RETRY_AFTER)
        if recorder.writer_error is not None:
            return error_response(503, recorder.writer_error, retry_after=LEDGER_RETRY_AFTER)
        return JSONResponse({"status": "ready"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(limits, gateway=gateway is not None))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        grpc_server = None
        if otlp_grpc_port is not None:
            grpc_server, bound = await start_grpc(
                otlp, otlp_grpc_host, otlp_grpc_port, write_tokens, limits.max_body_bytes
            )
            log.info("OTLP/gRPC TraceService on %s:%d", otlp_grpc_host, bound)
        yield
        if grpc_server is not None:
            # In-flight exports finish, and are committed, before the recorder closes.
            await grpc_server.stop(grace=10)
        if gateway is not None:
            await gateway.aclose()
        if close_recorder:
            # In-flight requests have finished (uvicorn waits for them); commit the rest.
            await run_in_threadpool(recorder.close)

    routes: list[BaseRoute] = [
        Route("/api/usage", post_usage, methods=["POST"]),
        Route("/api/metrics", api_metrics, methods=["GET"]),
        Route("/api/budget-usage", budget_usage, methods=["GET"]),
        Route("/api/metrics/timeseries", api_timeseries, methods=["GET"]),
        # Before /api/reports/{name}: `reconcile` is a report of the providers' bills.
        *capture_routes(recorder, reconcile),
        Route("/api/reports/{name}", api_report, methods=["GET"]),
        Route("/metrics", exposition, methods=["GET"]),
        Route("/metrics/fleet", fleet_exposition, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *dashboard_routes(recorder, read_token_required=bool(read_tokens)),
        *otlp.routes(),
    ]
    if gateway is not None:
        from ai_usage_exporter.gateway.routes import gateway_routes

        routes.extend(gateway_routes(gateway))
        # The gateway's admission checks its client tokens beside its keys (see
        # gateway/admission.py), so the middleware leaves its paths alone.
        gateway.admission.set_client_tokens(gateway_tokens)
        gateway_tokens = ()
    # With no token configured every path is open, and the middleware would only cost
    # a hop per request.
    middleware = (
        [
            Middleware(
                BearerAuthMiddleware,
                write_tokens=list(write_tokens),
                read_tokens=list(read_tokens),
                gateway_tokens=list(gateway_tokens),
                on_reject=lambda: recorder.count_rejected("unauthorized"),
                gateway_token=gateway.client_token if gateway is not None else None,
                gateway_refusal=gateway.unauthorized if gateway is not None else None,
            )
        ]
        if write_tokens or read_tokens or gateway_tokens
        else []
    )
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            404: _not_found,
            405: _method_not_allowed,
        },
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, f"no route {request.url.path}; see /openapi.json")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    response = error_response(405, f"method {request.method} not allowed on {request.url.path}")
    # RFC 9110 requires a 405 to list the allowed methods; the router computed them.
    allow = (getattr(exc, "headers", None) or {}).get("Allow")
    if allow:
        response.headers["Allow"] = allow
    return response
