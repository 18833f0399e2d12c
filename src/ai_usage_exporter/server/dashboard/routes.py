"""Routes of the dashboard: `/` -> `/dashboard`, the page and its files, and `/api/status`.

The page's files are read once from the package and served from memory, from a fixed
list of names, so no request path ever reaches the file system. The page itself is
open; the data it fetches is read-protected like `/metrics` (see auth.READ_PATHS).
"""

from __future__ import annotations

import threading
import time
from importlib import resources
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ai_usage_exporter.core.events.model import format_timestamp
from ai_usage_exporter.core.version import __version__
from ai_usage_exporter.ledger import LedgerError
from ai_usage_exporter.recorder.recorder import Recorder

# name -> media type; the only files served under /dashboard/.
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}

# The page loads nothing from elsewhere and runs no inline script; data: is for the
# empty favicon, which spares a 404 (and a console error) on every load.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

# The ledger probe writes and rolls back a row; polled by every open page, it is
# answered from this cache for a few seconds.
PROBE_TTL_SECONDS = 5.0


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def status_view(
    *,
    now: float,
    started_at: float,
    ledger_kind: str,
    ledger_error: str | None,
    writer_error: str | None,
    last_event_at: float | None,
    pending: int,
) -> dict[str, Any]:
    """The health the dashboard shows: process, ledger, writer, time since the last event."""
    writable = ledger_error is None and writer_error is None
    return {
        "status": "ok" if writable else "degraded",
        "version": __version__,
        "started_at": format_timestamp(started_at),
        "uptime_seconds": round(now - started_at, 3),
        "ledger": {"kind": ledger_kind, "writable": writable, "error": ledger_error},
        "writer_error": writer_error,
        "last_event_at": None if last_event_at is None else round(last_event_at, 3),
        "seconds_since_last_event": (
            None if last_event_at is None else round(max(0.0, now - last_event_at), 3)
        ),
        "events_pending": pending,
    }


class _Probe:
    """The ledger's writability, checked at most once per `PROBE_TTL_SECONDS`."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.lock = threading.Lock()
        self.checked_at = float("-inf")
        self.error: str | None = None

    def __call__(self) -> str | None:
        with self.lock:
            now = time.monotonic()
            if now - self.checked_at >= PROBE_TTL_SECONDS:
                try:
                    self.recorder.check_ready()
                    self.error = None
                except LedgerError as exc:
                    self.error = str(exc)
                self.checked_at = now
            return self.error


def dashboard_routes(recorder: Recorder, *, read_token_required: bool) -> list[BaseRoute]:
    """The page, its files and `/api/status`; the page asks for a token when one is needed."""
    page = _read("index.html").replace(
        b'data-auth="open"', b'data-auth="required"' if read_token_required else b'data-auth="open"'
    )
    assets = {name: (_read(name), media) for name, media in ASSETS.items()}
    probe = _Probe(recorder)
    kind = "postgresql" if recorder.ledger.url.startswith("postgres") else "sqlite"

    async def root(request: Request) -> Response:
        return RedirectResponse("/dashboard", status_code=302)

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            return Response(
                orjson.dumps({"error": {"message": f"no route {request.url.path}"}}),
                status_code=404,
                media_type="application/json",
            )
        body, media = found
        return Response(body, media_type=media, headers=SECURITY_HEADERS)

    def status_now() -> dict[str, Any]:
        ledger_error = probe()
        return status_view(
            now=time.time(),
            started_at=recorder.started_at,
            ledger_kind=kind,
            ledger_error=ledger_error,
            writer_error=recorder.writer_error,
            last_event_at=recorder.last_event_at(),
            pending=recorder.pending,
        )

    async def status(request: Request) -> Response:
        try:
            body = await run_in_threadpool(status_now)
        except LedgerError as exc:
            body = {"error": {"message": str(exc)}}
            return Response(orjson.dumps(body), status_code=503, media_type="application/json")
        return Response(orjson.dumps(body), media_type="application/json")

    return [
        Route("/", root, methods=["GET"]),
        Route("/dashboard", index, methods=["GET"]),
        Route("/dashboard/{name}", asset, methods=["GET"]),
        Route("/api/status", status, methods=["GET"]),
    ]
