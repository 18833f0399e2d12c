"""The SDK's one process-wide state (`_hub`), and the worker side's event preparation.

The lowest module of the SDK: `budget`, `session`, `core` and the integrations build
on it, and it imports none of them. Budgets reach it through `BudgetHook`, so the
hub need not know the budget module.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ai_usage_exporter.core.shapes.streams import fold_stream
from ai_usage_exporter.sdk.transport import Event, Transport

if TYPE_CHECKING:
    from ai_usage_exporter.core.pricing.book import PriceBook
    from ai_usage_exporter.recorder.recorder import Recorder

ENV_URL = "AI_USAGE_EXPORTER_URL"
ENV_WRITE_TOKEN = "AI_USAGE_EXPORTER_WRITE_TOKEN"
ENV_SERVICE = "AI_USAGE_EXPORTER_SERVICE"
ENV_DISABLED = "AI_USAGE_EXPORTER_DISABLED"

_TRUE = ("1", "true", "yes", "on")


class BudgetHook(Protocol):
    """What the hub needs of the configured budgets (`sdk.budget.BudgetBook`)."""

    warnings: Any

    def charge(self, event: Mapping[str, Any]) -> None: ...

    def check(self, attribution: Mapping[str, Any]) -> None: ...


class _Hub:
    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.recorder: Recorder | None = None
        self.url: str | None = None
        self.service: str | None = None
        self.enabled = os.environ.get(ENV_DISABLED, "").lower() not in _TRUE
        self.configured = False
        self.budgets: BudgetHook | None = None
        self.sessions_active = 0
        self.unsent: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._prices: PriceBook | None = None

    def prices(self) -> PriceBook:
        """The price book sessions and budgets use: the recorder's, else a default one."""
        if self.recorder is not None:
            return self.recorder.prices
        if self._prices is None:
            from ai_usage_exporter.core.pricing.book import PriceBook

            self._prices = PriceBook()
        return self._prices


_hub = _Hub()


# ---------------------------------------------------------------- worker side


def usage_dict(obj: Any) -> dict[str, Any]:
    """A provider usage object (pydantic model, mapping) as a plain dict of its fields."""
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        # by_alias gives Gemini's camelCase names; json mode turns enums into strings.
        out: dict[str, Any] = dump(mode="json", by_alias=True)
        return out
    to_dict = getattr(obj, "to_dict", None)
    if to_dict is not None:
        result: dict[str, Any] = to_dict()
        return result
    return dict(vars(obj))


def prepare(event: Event) -> Event:
    """An emitted event as the plain mapping the parser takes; the original is not changed."""
    if "_usage" not in event:
        return dict(event)
    out = dict(event)
    usage = usage_dict(out.pop("_usage"))
    delta = out.pop("_usage_delta", None)
    if delta is not None:
        # Anthropic's message_start and message_delta usage, folded by the shared rules
        # (later non-null values win, nested objects merge); only these two events of
        # the stream carry usage, so only they were kept.
        folded = fold_stream("anthropic", [{"usage": usage}, {"usage": usage_dict(delta)}])
        usage = folded if folded is not None else usage
    out["usage"] = usage
    return out
