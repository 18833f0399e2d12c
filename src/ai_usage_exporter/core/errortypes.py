"""The `error_type` of a failed LLM call, from an HTTP status or an exception (pure).

The SDK's instrumented clients and the gateway both name failures with these words,
so one alert or report covers every entry point.
"""

from __future__ import annotations

RATE_LIMIT = "rate_limit"
TIMEOUT = "timeout"
AUTH = "auth"
BAD_REQUEST = "bad_request"
NOT_FOUND = "not_found"
SERVER = "server"
CONNECTION = "connection"
CANCELLED = "cancelled"
OTHER = "other"

ERROR_TYPES: tuple[str, ...] = (
    RATE_LIMIT, TIMEOUT, AUTH, BAD_REQUEST, NOT_FOUND, SERVER, CONNECTION, CANCELLED, OTHER,
)  # fmt: skip


def error_type_for_status(status: int) -> str:
    """Name an HTTP error status the way the provider SDKs' exception classes do."""
    if status == 429:
        return RATE_LIMIT
    if status in (401, 403):
        return AUTH
    if status in (408, 504):
        return TIMEOUT
    if status == 404:
        return NOT_FOUND
    if status >= 500:
        return SERVER
    if 400 <= status < 500:
        return BAD_REQUEST
    return OTHER


def error_type_for_exception(exc: BaseException) -> str:
    """Name an exception from a provider SDK or an HTTP client without importing either.

    The official SDKs (openai, anthropic, groq) share one hierarchy: `APIStatusError`
    subclasses carry `status_code`, `APITimeoutError` subclasses `APIConnectionError`;
    httpx, aiohttp and ollama raise their own. Class names and a `status_code` attribute are
    enough, so no SDK has to be installed for this to work.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"APITimeoutError", "TimeoutException", "TimeoutError", "ReadTimeout",
                "ConnectTimeout", "DeadlineExceeded"}:  # fmt: skip
        return TIMEOUT
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None:
        status = getattr(exc, "code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return error_type_for_status(status)
    if names & {"APIConnectionError", "ConnectError", "ConnectionError", "NetworkError",
                "RemoteProtocolError", "ClientConnectionError", "ClientPayloadError"}:  # fmt: skip
        return CONNECTION
    if names & {"CancelledError", "KeyboardInterrupt", "GeneratorExit"}:
        return CANCELLED
    return OTHER
