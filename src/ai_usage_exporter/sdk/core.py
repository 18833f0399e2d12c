"""The SDK's one process-wide state: where events go, on/off, budgets; and `emit`.

`emit` is the hot path every instrumented call and `track_token_usage` ends in: it
merges attribution, hands the event to active sessions and budgets, and appends it
to the transport's queue. Turning provider usage objects into plain mappings, the
idempotency key, validation and pricing all happen later on the worker thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ai_usage_exporter.core.errortypes import error_type_for_exception
from ai_usage_exporter.sdk.budget import Budget, BudgetBook
from ai_usage_exporter.sdk.context import _collect, _current
from ai_usage_exporter.sdk.hub import (
    ENV_SERVICE,
    ENV_URL,
    ENV_WRITE_TOKEN,
    _hub,
    prepare,
)
from ai_usage_exporter.sdk.transport import Event, HttpTransport, RecorderTransport

if TYPE_CHECKING:
    from ai_usage_exporter.recorder.recorder import Recorder

log = logging.getLogger("ai_usage_exporter.sdk")


def configure(
    url: str | None = None,
    write_token: str | None = None,
    *,
    recorder: Recorder | None = None,
    service: str | None = None,
    enabled: bool | None = None,
    budgets: Sequence[Budget] | None = None,
    max_queue: int | None = None,
    batch_size: int | None = None,
) -> None:
    """Say where usage events go: a sidecar at `url`, or a `Recorder` in this process.

    With neither, ``AI_USAGE_EXPORTER_URL`` and ``AI_USAGE_EXPORTER_WRITE_TOKEN``
    decide; with no URL at all events only reach sessions and budgets. Calling it
    again flushes and replaces the previous destination.
    """
    if url is not None and recorder is not None:
        raise TypeError("configure() takes url or recorder, not both")
    with _hub.lock:
        old = _hub.transport
        _hub.transport = None
        if old is not None:
            old.close()
        kwargs: dict[str, Any] = {}
        if max_queue is not None:
            kwargs["max_queue"] = max_queue
        if batch_size is not None:
            kwargs["batch_size"] = batch_size
        if url is None and recorder is None:
            url = os.environ.get(ENV_URL) or None
            write_token = write_token or os.environ.get(ENV_WRITE_TOKEN) or None
        _hub.recorder = recorder
        _hub.url = url
        if recorder is not None:
            _hub.transport = RecorderTransport(recorder, prepare, **kwargs)
        elif url:
            _hub.transport = HttpTransport(url, prepare, write_token=write_token, **kwargs)
        _hub.service = service or os.environ.get(ENV_SERVICE) or None
        if enabled is not None:
            _hub.enabled = enabled
        if budgets is not None:
            _hub.budgets = BudgetBook(budgets) if budgets else None
        _hub.configured = True


def _autoconfigure() -> None:
    if not _hub.configured:
        configure()


def enable() -> None:
    """Record again after `disable()`."""
    _hub.enabled = True


def disable() -> None:
    """Stop recording; instrumented calls keep working, untouched."""
    _hub.enabled = False


def is_enabled() -> bool:
    return _hub.enabled


def flush(timeout: float | None = None) -> bool:
    """Wait until every event recorded so far is acknowledged; False on timeout."""
    t = _hub.transport
    return True if t is None else t.flush(timeout)


def shutdown(timeout: float | None = 2.0) -> None:
    """Flush for up to `timeout` seconds and stop the sender; `configure` starts a new one."""
    with _hub.lock:
        t, _hub.transport = _hub.transport, None
        _hub.configured = False
    if t is not None:
        t.close(timeout)


def stats() -> dict[str, Any]:
    """What the sender has queued, delivered and dropped (by reason)."""
    t = _hub.transport
    out: dict[str, Any] = (
        t.stats() if t is not None else {"queued": 0, "delivered": 0, "dropped": {}}
    )
    if _hub.unsent:
        out["dropped"] = {**dict(out["dropped"]), **_hub.unsent}
    if _hub.budgets is not None:
        out["budget_warnings"] = _hub.budgets.warnings
    return out


# ---------------------------------------------------------------- hot path


def emit(event: Event, attribution: Mapping[str, Any] | None = None) -> None:
    """Record one event: client attribution < usage_context < the event's own fields."""
    hub = _hub
    if not hub.enabled:
        return
    ctx = _current.get()
    if attribution or ctx:
        event = {**attribution, **ctx, **event} if attribution else {**ctx, **event}
    if "service" not in event and hub.service is not None:
        event["service"] = hub.service
    if hub.sessions_active:
        _collect(event)
    if hub.budgets is not None:
        hub.budgets.charge(event)
    t = hub.transport
    if t is None:
        if not hub.configured:
            _autoconfigure()
            t = hub.transport
        if t is None:
            _note_unsent()
            return
    t.send(event)


def _note_unsent() -> None:
    first = not _hub.unsent
    _hub.unsent["unconfigured"] += 1
    if first:
        log.warning(
            "ai-usage-exporter SDK: no destination configured (call configure(url=...) or "
            "configure(recorder=...), or set %s); usage events are not sent",
            ENV_URL,
        )


def check_budgets(attribution: Mapping[str, Any] | None) -> None:
    """Raise BudgetExceeded if a `raise` budget this call is charged to is used up."""
    book = _hub.budgets
    if book is None or not _hub.enabled:
        return
    ctx = _current.get()
    book.check({**attribution, **ctx} if attribution else ctx)


def record_call(
    provider: str,
    operation: str,
    model: Any,
    attribution: Mapping[str, Any] | None,
    t0: float,
    *,
    usage: Any = None,
    usage_delta: Any = None,
    exc: BaseException | None = None,
    ttft_ms: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Build an instrumented call's event; `usage` may be an SDK object, converted later."""
    event: Event = {
        "provider": provider,
        "model": model if isinstance(model, str) and model else "unknown",
        "operation": operation,
        "duration_ms": (time.perf_counter() - t0) * 1000.0,
        "timestamp": time.time(),
    }
    if usage is not None:
        event["_usage"] = usage
        if usage_delta is not None:
            event["_usage_delta"] = usage_delta
    if ttft_ms is not None:
        event["ttft_ms"] = ttft_ms
    if exc is not None:
        event["status"] = "error"
        event["error_type"] = error_type_for_exception(exc)
        event["level"] = "error"
    if extra:
        event.update(extra)
    emit(event, attribution)
