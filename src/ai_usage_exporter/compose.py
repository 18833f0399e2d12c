"""The one place that wires `Settings` into a price book, a ledger and a recorder.

Every entry point builds its parts here: `serve`, `import`, the ledger commands, the
benchmarks and the tests. A sidecar's recorder writes and rebuilds its own instance's
rows; a tool's (an import, a report) writes the unassigned rows, which the next
sidecar to start adopts, and takes over no sidecar's rows.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry

from ai_usage_exporter.config.settings import Settings, default_instance
from ai_usage_exporter.core.pricing.book import PriceBook
from ai_usage_exporter.ledger import Ledger, open_ledger
from ai_usage_exporter.recorder.recorder import Recorder
from ai_usage_exporter.recorder.usagelog import UsageLog

Role = Literal["sidecar", "tool"]


def build_price_book(settings: Settings) -> PriceBook:
    """The price book the settings name: a prices file, the config's `prices:`, or none."""
    if settings.prices_file:
        return PriceBook.from_file(settings.prices_file)
    if settings.prices is not None:
        return PriceBook(settings.prices, source=settings.config or "<config>")
    return PriceBook()


def build_ledger(settings: Settings, role: Role = "tool") -> Ledger:
    """The ledger the settings name; a sidecar's writes as its instance, a tool's as none."""
    return open_ledger(
        settings.db,
        synchronous=settings.synchronous,
        store_text=settings.store_text,
        instance=(settings.instance or default_instance()) if role == "sidecar" else None,
    )


def build_recorder(
    settings: Settings,
    role: Role = "sidecar",
    *,
    registry: CollectorRegistry | None = None,
    prices: PriceBook | None = None,
) -> Recorder:
    """A recorder over the settings' ledger and price book.

    A sidecar's also counts per its labels, checks its budgets and writes the usage
    log; a tool's only prices and commits (its events are counted by the sidecar that
    adopts them).
    """
    ledger = build_ledger(settings, role)
    book = prices if prices is not None else build_price_book(settings)
    if role == "tool":
        return Recorder(
            ledger,
            registry,
            prices=book,
            limits=settings.limits,
            store_text=settings.store_text,
            synchronous=settings.synchronous,
        )
    return Recorder(
        ledger,
        registry,
        prices=book,
        limits=settings.limits,
        label_caps=settings.label_caps,
        extra_labels=settings.extra_labels,
        store_text=settings.store_text,
        synchronous=settings.synchronous,
        budgets=settings.budgets,
        usage_log=(
            UsageLog(settings.usage_log, settings.usage_log_max_bytes, settings.usage_log_backups)
            if settings.usage_log
            else None
        ),
    )
