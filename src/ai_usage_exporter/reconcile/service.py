"""Fetch, store, compare: the steps `reconcile` and the sidecar's background loop share.

`fetch` reads one provider's bill through its admin API, `store` puts it into the
ledger (replacing the days it covers), `build` compares the stored bill with the
ledger's day buckets. `ReconcileCollector` serves the last closed day as gauges.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ai_usage_exporter.compose import build_ledger
from ai_usage_exporter.config.reconcile import ProviderSettings, ReconcileSettings
from ai_usage_exporter.config.settings import Settings
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.ledger import Ledger, LedgerError
from ai_usage_exporter.ledger.provider_usage import ORGANIZATION, StoreError
from ai_usage_exporter.reconcile import anthropic, openai
from ai_usage_exporter.reconcile._parse import DAY, Fetched
from ai_usage_exporter.reconcile.client import AdminClient, FetchError
from ai_usage_exporter.reconcile.compare import RECORDED_VALUES, Recorded, compare, totals

log = logging.getLogger("ai_usage_exporter.reconcile")

PROVIDERS: tuple[str, ...] = ("openai", "anthropic")
_MODULES = {"openai": openai, "anthropic": anthropic}
FETCH_META = "reconcile_fetch:{}"


def scopes_of(p: ProviderSettings) -> tuple[str, ...]:
    """The stored scopes a provider's comparison covers."""
    if p.scope is None:
        return (ORGANIZATION,)
    prefix = {"projects": "project", "api_keys": "api_key", "workspaces": "workspace"}[p.scope]
    return tuple(f"{prefix}:{i}" for i in p.ids)


def scope_text(p: ProviderSettings) -> str:
    if p.scope is None:
        return "organization-wide"
    return f"{p.scope}: {', '.join(p.ids)}"


def fetch(
    p: ProviderSettings,
    since: int,
    until: int,
    now: float,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """The provider's bill for the whole UTC days in [since, until)."""
    env = os.environ if environ is None else environ
    key = env.get(p.admin_key_env, "").strip()
    if not key:
        raise FetchError(
            f"{p.name}: no admin key: set {p.admin_key_env} to an admin key of the "
            f"organization (see `reconcile.providers.{p.name}.admin_key_env`)"
        )
    module = _MODULES[p.name]
    with AdminClient(
        p.name,
        p.base_url,
        key,
        p.admin_key_env,
        module.auth_headers,
        sleep=sleep,
    ) as client:
        fetched: Fetched = module.fetch(client, since, until, now, p.scope, p.ids)
        return fetched


def store(ledger: Ledger, fetched: Fetched) -> int:
    """Replace the fetched days in the ledger; the rows stored."""
    return ledger.replace_provider_usage(
        fetched.provider, fetched.days, fetched.scopes, fetched.rows
    )


def record_fetch(ledger: Ledger, provider: str, at: float, ok: bool, error: str = "") -> None:
    ledger.set_meta(
        FETCH_META.format(provider),
        orjson.dumps({"at": at, "ok": ok, "error": error}).decode(),
    )


def last_fetch(ledger: Ledger, provider: str) -> dict[str, Any] | None:
    raw = ledger.get_meta(FETCH_META.format(provider))
    return orjson.loads(raw) if raw else None


def recorded(ledger: Ledger, provider: str, start: int, end: int) -> list[Recorded]:
    """The ledger's day buckets of `provider` in [start, end), every instance's."""
    rows = ledger.bucket_sums(
        DAY, start, end, ("bucket", "provider", "model"), instance=None, values=RECORDED_VALUES
    )
    return [
        Recorded(int(r[0]), provider, str(r[2]), r[3:])
        for r in rows
        if str(r[1]).lower() == provider
    ]


def build(
    ledger: Ledger,
    book: PriceBook,
    settings: ReconcileSettings,
    providers: Sequence[str],
    since: int,
    until: int,
) -> dict[str, Any]:
    """The reconcile report: rows per day, provider and model, totals per provider."""
    rows: list[dict[str, Any]] = []
    not_fetched: dict[str, list[str]] = {}
    scope: dict[str, str] = {}
    for name in providers:
        p = settings.provider(name)
        scope[name] = scope_text(p)
        billed, days = ledger.provider_usage(name, since, until)
        found, missing = compare(
            name,
            billed,
            days,
            scopes_of(p),
            recorded(ledger, name, since, until),
            book.model_identity,
            book.rates,
        )
        rows.extend(found)
        if missing:
            not_fetched[name] = [_day(d) for d in missing]
    rows.sort(key=lambda r: (r["day"], r["provider"], r["model"]))
    return {
        "report": "reconcile",
        "since": _day(since),
        "until": _day(until),
        "providers": list(providers),
        "scope": scope,
        "rows": rows,
        "totals": totals(rows),
        "not_fetched": not_fetched,
    }


def closed_days(since: float, until: float | None, now: float) -> tuple[int, int]:
    """[since, until) as whole UTC days, ending no later than the start of today."""
    today = int(now // DAY * DAY)
    end = today if until is None else min(today, int(-(-until // DAY) * DAY))
    start = int(since // DAY * DAY)
    return min(start, end), end


def _day(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


# ---------------------------------------------------------------- in the sidecar


GAUGES = (
    ("ai_provider_billed_usd", "US dollars the provider billed for the last closed UTC day (NaN before a fetch covered it)."),
    ("ai_spend_capture_ratio", "Dollars recorded over dollars billed for the last closed UTC day; NaN when there is nothing to compare."),
    ("ai_spend_price_drift_models", "Models of the last closed UTC day whose tokens agree with the bill but whose dollars do not."),
    ("ai_provider_fetch_timestamp_seconds", "When the provider's bill was last fetched (Unix time)."),
    ("ai_provider_fetch_success", "1 if the last fetch of the provider's bill succeeded, 0 if it failed."),
)  # fmt: skip


def gauge_values(
    ledger: Ledger, book: PriceBook, settings: ReconcileSettings, now: float
) -> dict[str, dict[str, float]]:
    """Per gauge, per provider: the last closed day's values and the last fetch."""
    names = [n for n in PROVIDERS if n in settings.providers]
    day = int(now // DAY * DAY) - DAY
    body = build(ledger, book, settings, names, day, day + DAY)
    out: dict[str, dict[str, float]] = {g: {} for g, _ in GAUGES}
    for name in names:
        _, days = ledger.provider_usage(name, day, day + DAY)
        covered = any(s in scopes_of(settings.provider(name)) for (_, s) in days)
        t = body["totals"].get(name)
        billed = t["billed_usd"] if t else (0.0 if covered else math.nan)
        ratio = t["capture_ratio"] if t and t["capture_ratio"] is not None else math.nan
        out["ai_provider_billed_usd"][name] = billed
        out["ai_spend_capture_ratio"][name] = ratio if covered else math.nan
        out["ai_spend_price_drift_models"][name] = float(t["flags"]["price_drift"] if t else 0)
        last = last_fetch(ledger, name)
        if last is not None:
            out["ai_provider_fetch_timestamp_seconds"][name] = float(last["at"])
            out["ai_provider_fetch_success"][name] = 1.0 if last["ok"] else 0.0
    return out


class ReconcileCollector(Collector):
    """The reconcile gauges, read from the ledger at each scrape."""

    def __init__(self, ledger: Ledger, book: PriceBook, settings: ReconcileSettings) -> None:
        self.ledger, self.book, self.settings = ledger, book, settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            values = gauge_values(self.ledger, self.book, self.settings, time.time())
        except (LedgerError, StoreError):
            return
        for name, help_text in GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=("provider",))
            for provider, v in sorted(values[name].items()):
                family.add_metric([provider], v)
            yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


def fetch_and_store(
    ledger: Ledger,
    settings: ReconcileSettings,
    names: Sequence[str],
    since: int,
    until: int,
    now: float,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Fetch and store each provider; the error of each that failed (none: {})."""
    errors: dict[str, str] = {}
    for name in names:
        try:
            fetched = fetch(settings.provider(name), since, until, now, environ, sleep)
            store(ledger, fetched)
            record_fetch(ledger, name, time.time(), True)
            log.info(
                "reconcile: %s: %d days, %d rows stored (%d requests)",
                name,
                len(fetched.days),
                len(fetched.rows),
                fetched.requests,
            )
        except (FetchError, StoreError) as exc:
            errors[name] = str(exc)
            record_fetch(ledger, name, time.time(), False, str(exc))
    return errors


def start_background(settings: Settings, rc: ReconcileSettings) -> threading.Event:
    """Fetch the configured providers every `interval`; set the returned event to stop.

    Like retention, it opens its own ledger connection and commits in its own short
    transactions, so recording never waits behind a slow provider.
    """
    stop = threading.Event()
    names = [n for n in PROVIDERS if n in rc.providers]
    interval = rc.interval
    if not names or not interval:
        return stop

    def loop() -> None:
        while not stop.is_set():
            try:
                ledger = build_ledger(settings)
                try:
                    now = time.time()
                    since, until = closed_days(now - rc.days * DAY, None, now)
                    for name, error in fetch_and_store(
                        ledger, rc, names, since, until, now
                    ).items():
                        log.warning("reconcile: %s: %s", name, error)
                finally:
                    ledger.close()
            except Exception:  # noqa: BLE001 - retried next round; recording goes on
                log.exception("reconcile: fetching the providers' bills failed")
            if stop.wait(interval):
                return

    threading.Thread(target=loop, name="ai-usage-reconcile", daemon=True).start()
    return stop
