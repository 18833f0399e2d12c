"""`GET /api/reports/reconcile?days=30`: the reconcile report over the last closed days,
for the dashboard's capture panel (read-protected like every report).

It reads what the background fetch stored (`reconcile:` in the config); it never
fetches on a request. Without that section it answers `"configured": false` and no
rows, so the page hides the panel (a 404 would be an error in every browser console).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ai_usage_exporter.config.reconcile import ReconcileSettings
from ai_usage_exporter.ledger import LedgerError
from ai_usage_exporter.reconcile.service import PROVIDERS, build, closed_days
from ai_usage_exporter.recorder.recorder import Recorder

DAY = 86_400
MAX_DAYS = 400


def capture_routes(recorder: Recorder, settings: ReconcileSettings | None) -> list[BaseRoute]:
    names = [n for n in PROVIDERS if settings is not None and n in settings.providers]

    def report(days: int) -> dict[str, Any]:
        now = time.time()
        since, until = closed_days(now - days * DAY, None, now)
        if settings is None:
            return {"report": "reconcile", "configured": False, "rows": [], "totals": {}}
        body = build(recorder.ledger, recorder.prices, settings, names, since, until)
        return {**body, "configured": True}

    async def reconcile(request: Request) -> Response:
        raw = request.query_params.get("days", "30")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
            return JSONResponse(
                {"error": {"message": f"days must be a whole number 1..{MAX_DAYS}, got {raw!r}",
                           "field": "days", "value": raw}},
                status_code=400,
            )  # fmt: skip
        try:
            body = await run_in_threadpool(report, int(raw))
        except LedgerError as exc:
            return JSONResponse({"error": {"message": str(exc)}}, status_code=503)
        return JSONResponse(body)

    return [Route("/api/reports/reconcile", reconcile, methods=["GET"])]
