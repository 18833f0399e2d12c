"""Recorder: price -> ledger -> counters, in one process, thread-safe.

Every event goes through one writer thread that commits whatever is queued as one
transaction (a group commit), then adds the committed rollup deltas to the
counters. So the counters always equal what the ledger holds, under any number of
concurrent callers, and a restart rebuilds them from the rollup table.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as _generate_openmetrics

from ai_usage_exporter.config.settings import default_instance
from ai_usage_exporter.core.budgets import BudgetSpec
from ai_usage_exporter.core.events.model import (
    DEFAULT_LIMITS,
    Limits,
    UsageEvent,
    event_fields,
    format_timestamp,
)
from ai_usage_exporter.core.events.parse import parse_events
from ai_usage_exporter.core.metrics import MetricsState, UsageCollector, render_fleet
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.core.pricing.rates import Cost
from ai_usage_exporter.core.redact import redact_event
from ai_usage_exporter.core.timeseries import TimeseriesQuery
from ai_usage_exporter.core.timeseries import build as build_timeseries
from ai_usage_exporter.core.version import __version__
from ai_usage_exporter.core.views import json_view
from ai_usage_exporter.ledger import Ledger, LedgerError, open_ledger
from ai_usage_exporter.recorder.bucketcache import BucketCache
from ai_usage_exporter.recorder.budget_metrics import BudgetCollector
from ai_usage_exporter.recorder.usagelog import UsageLog

log = logging.getLogger("ai_usage_exporter")
# How often an idle writer looks for rows a tool wrote into its ledger (an import).
ADOPT_INTERVAL = 1.0

# How far back the JSON view compares senders' own cost estimates with ours.
SENDER_COST_WINDOW = 7 * 86400.0

Priced = tuple[UsageEvent, Cost]


@dataclass(frozen=True, slots=True)
class RecordResult:
    accepted: int
    duplicates: int


class RecorderBusyError(Exception):
    """More events are waiting for the ledger than the backlog limit allows."""


class RecorderClosedError(Exception):
    """The recorder is closed (or closing) and takes no more events."""


class _Submission:
    __slots__ = ("priced", "callback", "result", "error", "retry", "meta")

    def __init__(
        self,
        priced: list[Priced],
        callback: Callable[[_Submission], None] | None,
        retry: bool,
        meta: dict[str, str] | None = None,
    ) -> None:
        self.priced = priced
        self.callback = callback
        # Meta rows committed with the events (an import's checkpoint).
        self.meta = meta
        self.result: RecordResult | None = None
        self.error: BaseException | None = None
        # Fire-and-forget submissions have no one to tell of a failure, so they are
        # kept and retried rather than dropped.
        self.retry = retry


class Recorder:
    """Records usage events durably and keeps the counters Prometheus scrapes.

    `db` is a SQLite path, a ``postgresql://`` URL or an open `Ledger`. `registry`
    is the prometheus_client registry to register in; a new one is made when None
    (never the global one).
    """

    def __init__(
        self,
        db: str | Ledger = "ai-usage.db",
        registry: CollectorRegistry | None = None,
        *,
        prices: PriceBook | None = None,
        limits: Limits = DEFAULT_LIMITS,
        label_caps: Mapping[str, int] | None = None,
        extra_labels: Sequence[str] = (),
        store_text: bool = False,
        synchronous: str = "full",
        max_batch_events: int = 20_000,
        max_pending_events: int = 200_000,
        instance: str | None = None,
        budgets: Sequence[BudgetSpec] = (),
        usage_log: UsageLog | None = None,
    ) -> None:
        self.limits = limits
        self.prices = prices if prices is not None else PriceBook()
        self.ledger: Ledger = (
            open_ledger(
                db,
                synchronous=synchronous,
                store_text=store_text,
                instance=instance if instance is not None else default_instance(),
            )
            if isinstance(db, str)
            else db
        )
        self.instance = self.ledger.instance
        self.store_text = store_text
        self.usage_log = usage_log
        self.state = MetricsState(
            label_caps=label_caps,
            extra_labels=extra_labels,
            build_info={
                "version": __version__,
                "genai_prices_version": self.prices.genai_prices_version,
            },
        )
        t0 = time.perf_counter()
        self.state.apply(self.ledger.load_rollup())
        self.rebuild_seconds = time.perf_counter() - t0
        self.started_at = time.time()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.collector = UsageCollector(self.state)
        self.registry.register(self.collector)
        self.budgets = tuple(budgets)
        self.budget_collector: BudgetCollector | None = None
        if self.budgets:
            self.budget_collector = BudgetCollector(self.ledger, self.budgets, self.started_at)
            self.registry.register(self.budget_collector)
        self.max_batch_events = max_batch_events
        self.max_pending_events = max_pending_events
        self._queue: deque[_Submission] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self._writer_failing: str | None = None
        self._down_since = 0.0
        # The readiness probe writes on the writer's connection; sharing a transaction
        # with a commit in flight would let the probe's rollback undo that commit.
        self._ledger_lock = threading.Lock()
        self._last_event_at: float | None = None
        self.bucket_cache = BucketCache()
        self._thread = threading.Thread(
            target=self._run, name="ai-usage-ledger-writer", daemon=True
        )
        self._thread.start()

    # ---------------------------------------------------------------- recording

    def _prepare(self, events: Iterable[UsageEvent]) -> list[Priced]:
        price = self.prices.price
        max_text = self.limits.max_text_bytes
        out: list[Priced] = []
        store_text = self.store_text
        for e in events:
            if not store_text:
                # Never kept unless the operator asks, whichever ledger is behind us.
                e.prompt_text = e.response_text = e.query_text = None
            redact_event(e)
            # After redaction, so a cut never leaves half a secret unrecognised.
            e.prompt_text = _truncate_utf8(e.prompt_text, max_text)
            e.response_text = _truncate_utf8(e.response_text, max_text)
            e.query_text = _truncate_utf8(e.query_text, max_text)
            out.append((e, price(e)))
        return out

    def parse(self, items: Sequence[Any]) -> list[UsageEvent]:
        return parse_events(list(items), self.limits)

    def record(self, event: UsageEvent | Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """Queue one event (a UsageEvent, a mapping, or keyword fields) without waiting.

        It is validated and priced now, raising `EventError` when invalid; it is durable
        once `flush()` returns. A failed commit is retried, never dropped.
        """
        if event is None:
            events = parse_events([fields], self.limits)
        elif isinstance(event, UsageEvent):
            if fields:
                raise TypeError("give either a UsageEvent or keyword fields, not both")
            # Built in code, it gets the same checks as a posted event: a lone surrogate
            # or a negative count must fail here, not in the writer over and over.
            events = parse_events([event_fields(event)], self.limits)
        else:
            events = parse_events([{**event, **fields}], self.limits)
        self._enqueue(_Submission(self._prepare(events), None, retry=True))

    def enqueue(self, events: list[UsageEvent]) -> list[Priced]:
        """Queue events that `parse` returned without waiting; each with its price.

        One submission for the lot, so a caller holding several events (the gateway
        records a loop turn's calls together) takes the writer's lock once. Durable
        once `flush()` returns; a failed commit is retried, never dropped.
        """
        priced = self._prepare(events)
        self._enqueue(_Submission(priced, None, retry=True))
        return priced

    def record_many(
        self, events: Iterable[UsageEvent | Mapping[str, Any]], *, timeout: float | None = None
    ) -> RecordResult:
        """Record several events and wait until they are committed."""
        items = [event_fields(e) if isinstance(e, UsageEvent) else e for e in events]
        return self.record_parsed(parse_events(items, self.limits), timeout=timeout)

    def record_parsed(
        self,
        events: list[UsageEvent],
        *,
        timeout: float | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> RecordResult:
        """Record events that `parse` returned and wait until they are committed.

        `meta` rows are written in the same transaction, so a reader's position is
        saved exactly with the events read before it (an import's checkpoint).
        """
        done = threading.Event()
        sub = _Submission(
            self._prepare(events),
            lambda _s: done.set(),
            retry=False,
            meta=dict(meta) if meta else None,
        )
        self._enqueue(sub)
        if not done.wait(timeout):
            raise TimeoutError(f"events not committed within {timeout} s")
        if sub.error is not None:
            raise sub.error
        assert sub.result is not None
        return sub.result

    async def submit(self, events: list[UsageEvent]) -> RecordResult:
        """Record parsed events; returns once the ledger has committed them."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Submission] = loop.create_future()

        def done(sub: _Submission) -> None:
            loop.call_soon_threadsafe(_resolve, fut, sub)

        sub = _Submission(self._prepare(events), done, retry=False)
        self._enqueue(sub)
        await asyncio.shield(fut)
        if sub.error is not None:
            raise sub.error
        assert sub.result is not None
        return sub.result

    def _enqueue(self, sub: _Submission) -> None:
        n = len(sub.priced)
        with self._cond:
            if self._closing:
                raise RecorderClosedError("the recorder is closed")
            if self._pending and self._pending + n > self.max_pending_events:
                raise RecorderBusyError(
                    f"{self._pending} events are waiting for the ledger (limit {self.max_pending_events}); retry later"
                )
            self._queue.append(sub)
            self._pending += n
            self._cond.notify()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{self._pending} events still waiting for the ledger")
                self._cond.wait(remaining if remaining is not None else 1.0)

    # ---------------------------------------------------------------- writer

    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(ADOPT_INTERVAL)
                idle = not self._queue
                if idle and self._closing:
                    return
            if idle:
                # Rows an `import` wrote reach /metrics within a second, without the
                # scrape itself touching the database.
                self._adopt_quietly()
                continue
            with self._cond:
                group: list[_Submission] = []
                n = 0
                while self._queue and (
                    not group or n + len(self._queue[0].priced) <= self.max_batch_events
                ):
                    sub = self._queue.popleft()
                    group.append(sub)
                    n += len(sub.priced)
            if self._commit(group):
                backoff = 0.05
            else:
                retry = [s for s in group if s.retry]
                with self._cond:
                    self._queue.extendleft(reversed(retry))
                    self._pending -= n - sum(len(s.priced) for s in retry)
                    self._cond.notify_all()
                if retry:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

    def _commit(self, group: list[_Submission]) -> bool:
        priced = [p for s in group for p in s.priced]
        meta: dict[str, str] = {}
        for s in group:
            if s.meta:
                meta.update(s.meta)  # in queue order: a later checkpoint wins
        try:
            with self._ledger_lock:
                if meta:
                    result = self.ledger.write(priced, time.time(), meta=meta)
                else:
                    result = self.ledger.write(priced, time.time())
        except LedgerError as exc:
            self._ledger_down(exc)
            for s in group:
                if not s.retry:
                    s.error = exc
                    if s.callback is not None:
                        s.callback(s)
            return False
        except BaseException as exc:  # a bug must not kill the writer and strand every waiter
            log.exception("ledger writer failed")
            for s in group:
                s.error = exc
            self._finish(group, len(priced))
            return True
        self._ledger_up()
        self.state.apply(result.deltas.items())
        if self.usage_log is not None:
            self._log_usage(group, result.inserted)
        accepted = sum(result.inserted)
        if accepted:
            self._last_event_at = time.time()
            self.bucket_cache.note_commit(min([e.timestamp for e, _ in priced]))
        self.state.count_exporter(accepted=accepted, duplicate=len(priced) - accepted)
        i = 0
        for s in group:
            k = len(s.priced)
            ok = sum(result.inserted[i : i + k])
            i += k
            s.result = RecordResult(ok, k - ok)
        self._finish(group, len(priced))
        return True

    def _ledger_down(self, exc: LedgerError) -> None:
        """Note the ledger failing; the log says so once, not once per request."""
        if self._writer_failing is None:
            self._down_since = time.monotonic()
            log.error(
                "ledger unavailable: %s; writes are answered 503 (retry) and queued records "
                "wait until it is back",
                " ".join(str(exc).split()),  # one line: drivers' messages span several
            )
        self._writer_failing = str(exc)

    def _ledger_up(self) -> None:
        """Note the ledger taking writes; the log says so once, with how long it was away."""
        if self._writer_failing is not None:
            self._writer_failing = None
            log.warning(
                "ledger %s is available again after %.1f s",
                self.ledger.url,
                time.monotonic() - self._down_since,
            )

    def _log_usage(self, group: list[_Submission], inserted: list[bool]) -> None:
        assert self.usage_log is not None
        i = 0
        try:
            for s in group:
                ok = [
                    p
                    for p, new in zip(s.priced, inserted[i : i + len(s.priced)], strict=True)
                    if new
                ]
                i += len(s.priced)
                self.usage_log.write([e for e, _ in ok], [c.total for _, c in ok])
        except OSError as exc:
            # The ledger holds the events; a full disk for the log must not stop recording.
            log.error("usage log %s: %s", self.usage_log.path, exc)

    def _finish(self, group: list[_Submission], n_events: int) -> None:
        """Tell each submitter its outcome and release the group's place in the backlog."""
        for s in group:
            if s.callback is not None:
                s.callback(s)
        with self._cond:
            self._pending -= n_events
            self._cond.notify_all()

    # ---------------------------------------------------------------- reading

    @property
    def writer_error(self) -> str | None:
        """The last commit error while the ledger keeps failing, else None."""
        return self._writer_failing

    @property
    def pending(self) -> int:
        """Events accepted for writing and not yet committed."""
        return self._pending

    def count_rejected(self, reason: str, n: int = 1) -> None:
        self.state.count_rejected(reason, n)

    def adopt_unadopted(self) -> int:
        """Adopt rows a tool (`import`) wrote since the start; returns requests adopted.

        The rows move into this instance and their sums into the counters (see
        `Ledger.adopt_unadopted`). The JSON view, charts and reports run it before they
        read, so they and the counters agree; the idle writer runs it every second, so
        `/metrics`, which never waits on the database, has them within a second.
        """
        if not self.ledger.has_unadopted():
            return 0
        with self._ledger_lock:
            deltas = self.ledger.adopt_unadopted()
            # Inside the lock: the next adopter finds the rows gone and the counters grown.
            self.state.apply(deltas)
        if not deltas:
            return 0
        self.bucket_cache.note_commit(0.0)  # the moved buckets may lie anywhere in time
        n = sum(vec[0] for _, vec in deltas)
        log.info("adopted %d requests a tool wrote to the ledger (an import)", n)
        return n

    def _adopt_quietly(self) -> None:
        # The writer's idle round: a ledger that cannot be read now is tried again in
        # a second, and the writer's own errors say when it is down.
        try:
            self.adopt_unadopted()
        except LedgerError as exc:
            log.debug("%s", exc)

    def add_budget_source(self, source: Callable[[], list[dict[str, Any]]]) -> None:
        """Show more budget rows (e.g. the gateway's per-key budgets) as ai_budget_* gauges."""
        if self.budget_collector is None:
            self.budget_collector = BudgetCollector(self.ledger, (), self.started_at)
            self.registry.register(self.budget_collector)
        self.budget_collector.sources.append(source)

    def view(self, limit: int = 100, scope: str = "instance") -> dict[str, Any]:
        """The JSON view: totals and breakdowns from the ledger's rollup.

        `scope` "instance" (the default) covers the events this sidecar committed or
        adopted, the same as its counters; "fleet" covers every sidecar sharing the ledger.
        """
        self.adopt_unadopted()
        view = json_view(
            summary=self.ledger.summary(limit, scope, self.prices.canonical_model),
            exporter=self.state.exporter,
            started_at=self.started_at,
            now=time.time(),
            version=__version__,
            genai_prices_version=self.prices.genai_prices_version,
        )
        view["scope"] = scope
        view["exporter"]["instance"] = self.instance
        if self.budget_collector is not None:
            # JSON has no infinity: "nothing burns" is null there, +Inf in the gauge.
            view["budgets"] = [
                {**r, "hours_to_exhaustion": None}
                if r["hours_to_exhaustion"] == float("inf")
                else r
                for r in self.budget_collector.rows()
            ]
        if scope == "fleet":
            view["instances"] = self.ledger.instances()
        since = time.time() - SENDER_COST_WINDOW
        n, theirs, ours = self.ledger.sender_costs(since, self.ledger.scope_instance(scope))
        if n:
            # Senders' own estimates (an OTLP span's gen_ai.usage.cost, operation.cost)
            # beside our price of the same calls; never used as the price.
            view["sender_costs"] = {
                "since": format_timestamp(since),
                "events": n,
                "sender_usd": round(theirs, 9),
                "ours_usd": round(ours, 9),
                "difference_usd": round(theirs - ours, 9),
                "ratio": round(theirs / ours, 6) if ours else None,
            }
        return view

    def fleet_exposition(self) -> bytes:
        """Fleet-wide totals from the ledger as `ai_fleet_*` gauges (text format 0.0.4)."""
        return render_fleet(self.ledger.fleet_totals()).encode()

    def timeseries(self, query: TimeseriesQuery) -> dict[str, Any]:
        """A chart's series from the ledger's time buckets, in the query's scope."""
        step = query.step_seconds
        self.adopt_unadopted()
        instance = self.ledger.scope_instance(query.scope)

        def fetch(start: int, end: int) -> list[tuple[Any, ...]]:
            return self.ledger.bucket_sums(
                step, start, end, query.group_by, query.filters, instance=instance
            )

        # The rows hold every value column, so one entry serves each metric of a shape.
        # In the fleet scope, other sidecars' commits are not noted here: the cache's
        # max_age bounds how long a late one into a closed bucket stays unseen.
        key = (step, query.group_by, tuple(sorted(query.filters.items())), instance)
        rows = self.bucket_cache.sums(key, step, query.start, query.end, time.time(), fetch)
        if query.by == "model":
            # One model, one series: a dated snapshot adds into its model's (the ledger
            # keeps the served names; build sums rows that share a key).
            name = self.prices.canonical_model
            rows = [(r[0], r[1], name(r[1], r[2]), *r[3:]) for r in rows]
        body = build_timeseries(query, rows)
        body["scope"] = query.scope
        return body

    def exposition(self) -> bytes:
        """Prometheus text format 0.0.4: our families, then anything else in the registry."""
        with self.collector.skipping():
            others = _generate_latest(self.registry)
        return self.state.render_text().encode() + others

    def openmetrics(self) -> bytes:
        return bytes(_generate_openmetrics(self.registry))

    def check_ready(self) -> None:
        """Raise LedgerError unless the ledger takes writes now.

        The probe tells the writer's state too: with nothing to commit, a ledger that
        came back would otherwise stay "failing" (and /readyz 503) until the next write,
        which a probe keeping traffic away would never let come.
        """
        try:
            with self._ledger_lock:
                self.ledger.check_writable(commit=self._writer_failing is not None)
        except LedgerError as exc:
            self._ledger_down(exc)
            raise
        self._ledger_up()

    def last_event_at(self) -> float | None:
        """When the newest event was committed (epoch s), else the newest stored event's time.

        The fallback covers a restart: the ledger's newest timestamp is what a person
        asking "when did the last call arrive" means before this process sees one.
        """
        if self._last_event_at is None:
            self._last_event_at = self.ledger.latest_event_ts()
        return self._last_event_at

    # ---------------------------------------------------------------- lifecycle

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit what is queued, stop the writer and close the ledger."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "ledger writer did not finish within %s s; %d events uncommitted",
                timeout,
                self._pending,
            )
        self.registry.unregister(self.collector)
        if self.budget_collector is not None:
            self.registry.unregister(self.budget_collector)
        self.ledger.close()
        if self.usage_log is not None:
            self.usage_log.close()
        self._closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_utf8(text: str | None, max_bytes: int) -> str | None:
    """The longest prefix of `text` that is at most `max_bytes` bytes as UTF-8."""
    if text is None or len(text) * 4 <= max_bytes:
        return text
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    # Dropping the incomplete sequence at the cut keeps whole characters only.
    return data[:max_bytes].decode("utf-8", "ignore")


def _resolve(fut: asyncio.Future[_Submission], sub: _Submission) -> None:
    if not fut.done():
        fut.set_result(sub)
