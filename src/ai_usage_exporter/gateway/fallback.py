"""The one place that decides whether a failed attempt may move on to the next upstream (pure).

Like Envoy's retry policy, only failures before the first byte of a response has
reached the client qualify: a connection that could not be made, a timeout while
waiting for the response to start, 429 and 5xx. Other 4xx answers are the
request's fault and would fail the same way anywhere, so they go back to the client.
"""

from __future__ import annotations

from ai_usage_exporter.core.errortypes import (
    CONNECTION,
    TIMEOUT,
    error_type_for_exception,
    error_type_for_status,
)


def fallback_reason_for_status(status: int) -> str | None:
    """The reason to try the next upstream after this HTTP status, or None to serve it."""
    if status == 429 or 500 <= status <= 599:
        return error_type_for_status(status)
    return None


def fallback_reason_for_exception(exc: BaseException) -> str:
    """The reason to try the next upstream after the request failed in transport.

    Every transport failure before the response started qualifies (the request may
    not have reached the provider, or its answer never began); the name says which.
    """
    return TIMEOUT if error_type_for_exception(exc) == TIMEOUT else CONNECTION
