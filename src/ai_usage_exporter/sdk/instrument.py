"""`instrument(client, **attribution)`: record every call a client makes."""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from .context import check_fields
from .integrations import integration_for

C = TypeVar("C")


def instrument(client: C, **attribution: Any) -> C:
    """Return `client` itself with each call recorded (openai, anthropic, groq, ollama,
    google-genai clients, sync and async).

    `attribution` (agent, tenant, service, ...) is added to every event of this client;
    a `usage_context` around a call overrides it. Only this client object is changed:
    other clients, and copies made with ``with_options()``, are not instrumented.
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
    try:
        client._ai_usage_instrumented = True  # type: ignore[attr-defined]
    except AttributeError:  # a client with __slots__ is still instrumented, just unmarked
        pass
    return client
