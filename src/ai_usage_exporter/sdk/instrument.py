"""`instrument(client, **attribution)`: record every call a client makes."""

from __future__ import annotations

import functools
import importlib
from typing import Any, TypeVar

from ai_usage_exporter.sdk.context import check_fields
from ai_usage_exporter.sdk.integrations import integration_for

C = TypeVar("C")

# The generated (Stainless) clients whose copy()/with_options() build a new client with
# fresh resources, which would otherwise be uninstrumented.
_COPYING = frozenset({"openai", "anthropic", "groq"})


def instrument(client: C, **attribution: Any) -> C:
    """Return `client` itself with each call recorded (openai, anthropic, groq, ollama,
    google-genai clients, sync and async).

    `attribution` (agent, tenant, service, ...) is added to every event of this client;
    a `usage_context` around a call overrides it. Only this client object is changed,
    not its class; copies it makes with ``with_options()`` or ``copy()`` (openai,
    anthropic, groq) are instrumented in turn with the same attribution.
    """
    attr = check_fields(dict(attribution), "instrument")
    name = integration_for(client)
    if name is None:
        raise TypeError(
            f"instrument() does not know {type(client).__module__}.{type(client).__qualname__}; "
            "it takes openai, anthropic, groq, ollama and google-genai clients"
        )
    if getattr(client, "_ai_usage_instrumented", False):
        return client
    module = importlib.import_module(f"{__package__}.integrations.{name}")
    module.instrument_client(client, attr)
    if name in _COPYING:
        _follow_copies(client, attr)
    try:
        client._ai_usage_instrumented = True  # type: ignore[attr-defined]
    except AttributeError:  # a client with __slots__ is still instrumented, just unmarked
        pass
    return client


def _follow_copies(client: Any, attr: dict[str, Any]) -> None:
    """Make the client's copy() and with_options() return an instrumented copy."""
    for method in ("copy", "with_options"):
        original = getattr(client, method, None)
        if original is None or getattr(original, "_ai_usage_wrapped", False):
            continue
        try:
            setattr(client, method, _copying(original, attr))
        except AttributeError:  # __slots__: its copies stay uninstrumented
            pass


def _copying(original: Any, attr: dict[str, Any]) -> Any:
    @functools.wraps(original)
    def copied(*args: Any, **kwargs: Any) -> Any:
        return instrument(original(*args, **kwargs), **attr)

    copied._ai_usage_wrapped = True  # type: ignore[attr-defined]
    return copied
