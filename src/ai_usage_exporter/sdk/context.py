"""Attribution that follows the code: `usage_context(agent=..., task=...)`.

A contextvars-based context manager and decorator; contexts nest (inner fields win)
and are isolated per thread and per asyncio task, so concurrent agents never mix
their attribution.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, TypeVar, cast

from ai_usage_exporter.core.events.model import ATTRIBUTION_FIELDS

CONTEXT_FIELDS: frozenset[str] = frozenset((*ATTRIBUTION_FIELDS, "service"))

_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})
_current: ContextVar[MappingProxyType[str, Any]] = ContextVar("ai_usage_context", default=_EMPTY)

# The active `session.Session`s of this context; `emit` hands each event to theirs.
_sessions: ContextVar[tuple[Any, ...]] = ContextVar("ai_usage_sessions", default=())


def _collect(event: dict[str, Any]) -> None:
    for s in _sessions.get():
        s.events.append(event)


F = TypeVar("F", bound=Callable[..., Any])


def current_attribution() -> MappingProxyType[str, Any]:
    """The fields of every `usage_context` the caller is inside, inner ones winning."""
    return _current.get()


def check_fields(fields: dict[str, Any], what: str = "usage_context") -> dict[str, Any]:
    """Refuse unknown attribution names, and drop None values (meaning "not set")."""
    unknown = sorted(set(fields) - CONTEXT_FIELDS)
    if unknown:
        raise TypeError(
            f"{what}() got unknown field(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(CONTEXT_FIELDS))}"
        )
    return {k: (str(v) if k == "step" else v) for k, v in fields.items() if v is not None}


class usage_context:  # noqa: N801 - used like a function, as contextlib's helpers are
    """Add attribution fields to every usage event recorded inside this context.

    ``with usage_context(agent="planner", task="search"): ...`` or as a decorator,
    on plain and async functions alike.
    """

    def __init__(self, **fields: Any) -> None:
        self.fields = check_fields(fields)
        self._tokens: list[Token[MappingProxyType[str, Any]]] = []

    def __enter__(self) -> usage_context:
        merged = MappingProxyType({**_current.get(), **self.fields})
        self._tokens.append(_current.set(merged))
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())

    def __call__(self, fn: F) -> F:
        fields = self.fields
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with usage_context(**fields):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with usage_context(**fields):
                return fn(*args, **kwargs)

        return cast(F, wrapper)
