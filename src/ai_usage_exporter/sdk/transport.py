"""Where SDK events go: a background worker per destination, fed by a bounded queue.

The app's thread only appends to a deque (`send`); a daemon worker prepares the
events (turns provider usage objects into plain mappings), then hands them to a
`Recorder` in this process or POSTs them to a sidecar. The app never blocks on, or
fails because of, the destination: a full queue drops the new event, and every drop
is counted and logged. `flush(timeout)` waits until everything sent before it is
acknowledged; an exit handler flushes what is left.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ai_usage_exporter.core.events.model import EventError

if TYPE_CHECKING:
    from ai_usage_exporter.recorder.recorder import Recorder

log = logging.getLogger("ai_usage_exporter.sdk")

Event = dict[str, Any]
Prepare = Callable[[Event], Event]

DEFAULT_MAX_QUEUE = 100_000
DEFAULT_BATCH = 1_000
# The worker wakes this often, or at once when a batch's worth is waiting or on flush:
# waking it per event would hand it the GIL in the middle of the app's call.
LINGER_SECONDS = 0.05
WAKE_AT = 100
EXIT_FLUSH_SECONDS = 2.0
# Statuses a retry can cure; any other 4xx means the events themselves are wrong.
RETRY_STATUSES = frozenset((408, 425, 429, 500, 502, 503, 504))


class _Marker:
    """A flush request in the queue: set once everything before it is acknowledged."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class Transport:
    """A bounded queue drained by one daemon worker; subclasses deliver batches."""

    name = "transport"

    def __init__(
        self,
        prepare: Prepare,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_size: int = DEFAULT_BATCH,
        max_backoff: float = 30.0,
    ) -> None:
        self._prepare = prepare
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self._queue: deque[Event | _Marker] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.dropped: Counter[str] = Counter()
        self.delivered = 0
        self._last_drop_log = 0.0
        self._unlogged_drops = 0
        self._start()
        _live.add(self)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"ai-usage-{self.name}", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child (gunicorn, multiprocessing): a fresh worker and an empty queue.

        What was queued before the fork belongs to the parent, which sends it; the child
        sending it too would count it twice.
        """
        self._queue = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        if not self._stop.is_set():
            self._start()

    # ---------------------------------------------------------------- app side

    def send(self, event: Event) -> None:
        """Queue one event; never blocks, never raises."""
        queue = self._queue
        if len(queue) >= self.max_queue:
            self._drop("queue_full", 1)
            return
        queue.append(event)
        if len(queue) >= WAKE_AT and not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event sent before this call is acknowledged; False on timeout."""
        if not self._thread.is_alive():
            return not self._queue
        marker = _Marker()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = EXIT_FLUSH_SECONDS) -> None:
        """Flush for up to `timeout` seconds, then stop; what is left is counted as lost."""
        if self._stop.is_set():
            return
        done = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(1.0)
        if not done:
            left = sum(1 for e in self._queue if not isinstance(e, _Marker))
            if left:
                self._drop("not_delivered_at_exit", left)
                self._log_drops(force=True)
        _live.discard(self)

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self._queue),
            "delivered": self.delivered,
            "dropped": dict(self.dropped),
        }

    # ---------------------------------------------------------------- drops

    def _drop(self, reason: str, n: int) -> None:
        with self._lock:
            self.dropped[reason] += n
            self._unlogged_drops += n
        self._log_drops()

    def _log_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        # At most one line every 10 s, so a long outage does not flood the log.
        if not force and now - self._last_drop_log < 10.0:
            return
        with self._lock:
            n, self._unlogged_drops = self._unlogged_drops, 0
            self._last_drop_log = now
            totals = dict(self.dropped)
        if n:
            log.warning(
                "ai-usage-exporter SDK dropped %d usage events (%s since start: %s)",
                n,
                self.name,
                ", ".join(f"{k}={v}" for k, v in sorted(totals.items())),
            )

    # ---------------------------------------------------------------- worker

    def _run(self) -> None:
        queue = self._queue
        while not self._stop.is_set():
            self._wake.wait(LINGER_SECONDS)
            self._wake.clear()
            while queue and not self._stop.is_set():
                batch: list[Event] = []
                marker: _Marker | None = None
                while queue and len(batch) < self.batch_size:
                    item = queue.popleft()
                    if isinstance(item, _Marker):
                        marker = item
                        break
                    try:
                        batch.append(self._prepare(item))
                    except Exception as exc:  # noqa: BLE001 - a bad event must not stop the worker
                        log.warning("usage event could not be prepared: %s", exc)
                        self._drop("invalid", 1)
                if batch:
                    try:
                        self._deliver(batch)
                    except Exception:  # noqa: BLE001
                        log.exception("usage events could not be delivered")
                        self._drop("error", len(batch))
                if marker is not None:
                    marker.done.set()
            if self._unlogged_drops:
                self._log_drops()

    def _deliver(self, batch: list[Event]) -> None:
        raise NotImplementedError

    def _sleep(self, seconds: float) -> bool:
        """Wait `seconds` unless stopping; True when the worker should give up."""
        return self._stop.wait(seconds)


class RecorderTransport(Transport):
    """Hands events to a `Recorder` in this process (validate, price, commit)."""

    name = "recorder"

    def __init__(self, recorder: Recorder, prepare: Prepare, **kwargs: Any) -> None:
        self.recorder = recorder
        super().__init__(prepare, **kwargs)

    def _deliver(self, batch: list[Event]) -> None:
        from ai_usage_exporter.recorder.recorder import RecorderBusyError, RecorderClosedError

        backoff = 0.05
        while True:
            try:
                result = self.recorder.record_many(batch)
                self.delivered += result.accepted + result.duplicates
                return
            except EventError as exc:
                batch = self._without_invalid(batch, exc)
                if not batch:
                    return
            except RecorderBusyError:
                if self._sleep(backoff):
                    self._drop("not_delivered_at_exit", len(batch))
                    return
                backoff = min(backoff * 2, self.max_backoff)
            except RecorderClosedError:
                self._drop("recorder_closed", len(batch))
                return

    def _without_invalid(self, batch: list[Event], exc: EventError) -> list[Event]:
        bad = {d.index for d in exc.details}
        for d in exc.details[:3]:
            log.warning("usage event rejected: %s: %s", d.field, d.message)
        self._drop("invalid", len(bad))
        return [e for i, e in enumerate(batch) if i not in bad]


class HttpTransport(Transport):
    """POSTs NDJSON batches to a sidecar's /api/usage, retrying what can be retried.

    Each event gets its idempotency_key once, before its first attempt, so a retry of
    a batch the sidecar did commit (but whose answer was lost) counts nothing twice.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        prepare: Prepare,
        *,
        write_token: str | None = None,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"Content-Type": "application/x-ndjson"}
        if write_token:
            headers["Authorization"] = f"Bearer {write_token}"
        self._client = httpx.Client(headers=headers, timeout=timeout)
        super().__init__(prepare, **kwargs)

    def _deliver(self, batch: list[Event]) -> None:
        import httpx

        for event in batch:
            if "idempotency_key" not in event:
                event["idempotency_key"] = uuid.uuid4().hex
        backoff = 0.1
        failing = False
        while batch:
            body = b"\n".join(orjson.dumps(e) for e in batch)
            try:
                r = self._client.post(f"{self.url}/api/usage", content=body)
                status = r.status_code
            except httpx.HTTPError as exc:
                status, r = 0, None
                reason = f"{type(exc).__name__}: {exc}"
            else:
                reason = f"HTTP {status}"
            if 200 <= status < 300:
                self.delivered += len(batch)
                if failing:
                    log.warning("sidecar %s accepts usage events again", self.url)
                return
            if r is not None and status not in RETRY_STATUSES:
                batch = self._without_rejected(batch, r)
                continue
            if not failing:
                log.warning(
                    "sidecar %s did not take %d usage events (%s); retrying with backoff",
                    self.url,
                    len(batch),
                    reason,
                )
                failing = True
            # Jitter, so many processes do not come back in step after an outage.
            if self._sleep(backoff * (0.5 + random.random())):
                self._queue.extendleft(reversed(batch))  # counted as lost by close()
                return
            backoff = min(backoff * 2, self.max_backoff)

    def _without_rejected(self, batch: list[Event], r: Any) -> list[Event]:
        """Drop the events a 4xx names (all of them if it names none); keep the rest."""
        try:
            details = r.json()["error"].get("details") or []
            bad = {int(d["index"]) for d in details if int(d["index"]) >= 0}
            first = details[0] if details else {}
        except Exception:  # noqa: BLE001 - an unexpected body rejects the batch as a whole
            bad, first = set(), {}
        if not bad:
            bad = set(range(len(batch)))
        log.warning(
            "sidecar %s rejected %d usage events (HTTP %d): %s",
            self.url,
            len(bad),
            r.status_code,
            first.get("message") or r.text[:200],
        )
        self._drop("rejected", len(bad))
        return [e for i, e in enumerate(batch) if i not in bad]

    def budget_usage(
        self, since: float, field: str | None, value: str | None
    ) -> dict[str, Any] | None:
        """What the sidecar's ledger holds for a budget key since `since`; None if unreachable.

        Sent with the write token: an app that may record usage may read its sums.
        """
        import httpx

        params: dict[str, Any] = {"since": since}
        if field is not None:
            params["field"] = field
        if value is not None:
            params["value"] = value
        try:
            r = self._client.get(f"{self.url}/api/budget-usage", params=params, timeout=5.0)
            r.raise_for_status()
            data: dict[str, Any] = r.json()
            return data
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("budget: cannot read usage from %s: %s", self.url, exc)
            return None

    def close(self, timeout: float | None = EXIT_FLUSH_SECONDS) -> None:
        super().close(timeout)
        self._client.close()

    def _after_fork(self) -> None:
        import httpx

        # The parent's pooled connections must not be shared with the child.
        headers = self._client.headers
        self._client = httpx.Client(headers=headers, timeout=self._client.timeout)
        super()._after_fork()


# Every open transport, flushed at interpreter exit (weakly held: a transport the app
# dropped does not live on for this).
_live: weakref.WeakSet[Transport] = weakref.WeakSet()


def _close_all() -> None:
    for t in list(_live):
        try:
            t.close(EXIT_FLUSH_SECONDS)
        except Exception:  # noqa: BLE001 - exit must not fail because of telemetry
            log.exception("flushing usage events at exit failed")


def _after_fork_in_child() -> None:
    for t in list(_live):
        t._after_fork()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
