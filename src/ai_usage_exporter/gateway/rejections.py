"""A refused gateway call, and how each API spells the refusal (pure).

`Rejection` says what was refused and why, in API-neutral terms; one renderer per API
turns it into the body that API's own SDK understands, so a client sees the message
(and, for a 429, backs off by `Retry-After`) whichever API it speaks:

- OpenAI: ``{"error": {"message", "type", "param", "code", ...details}}``
- Anthropic (``/v1/messages``): ``{"type": "error", "error": {"type", "message"}}``
- Gemini (``generateContent``): ``{"error": {"code", "message", "status"}}``
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ai_usage_exporter.gateway.limits import retry_after_header

# ai_gateway_rejected_total's reasons.
REASONS: tuple[str, ...] = (
    "unauthorized",
    "expired",
    "route_not_allowed",
    "model_not_allowed",
    "budget",
    "rate_limit",
    "rate_limiter_unavailable",
    "ledger_unavailable",
)

_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}
_GEMINI_STATUS = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}
_OPENAI_TYPES = {
    401: "invalid_request_error",
    403: "permission_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a call was refused before it went upstream."""

    status: int
    reason: str  # one of REASONS
    message: str
    key: str | None = None  # the gateway key's name, once it is known
    unit: str | None = None  # usd, tokens, requests_per_minute, tokens_per_minute
    used: float | None = None
    limit: float | None = None
    resets_at: float | None = None  # epoch seconds
    retry_after: float | None = None  # seconds

    def details(self) -> dict[str, Any]:
        """The figures behind the refusal, for a body that has room for them."""
        out: dict[str, Any] = {}
        if self.key is not None:
            out["key"] = self.key
        for name in ("unit", "used", "limit"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.resets_at is not None:
            out["resets_at"] = iso(self.resets_at)
        if self.retry_after is not None:
            out["retry_after_s"] = round(self.retry_after, 3)
        return out


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def headers(rejection: Rejection) -> dict[str, str]:
    """Headers every API's refusal carries: Retry-After on a 429, a challenge on a 401."""
    out: dict[str, str] = {}
    if rejection.retry_after is not None:
        out["retry-after"] = retry_after_header(rejection.retry_after)
    if rejection.status == 401:
        out["www-authenticate"] = 'Bearer realm="ai-usage-exporter"'
    return out


def openai_body(rejection: Rejection) -> dict[str, Any]:
    return {
        "error": {
            "message": rejection.message,
            "type": _OPENAI_TYPES.get(rejection.status, "gateway_error"),
            "param": None,
            "code": rejection.reason,
            **rejection.details(),
        }
    }


def anthropic_body(rejection: Rejection) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_TYPES.get(rejection.status, "api_error"),
            "message": rejection.message,
        },
    }


def gemini_body(rejection: Rejection) -> dict[str, Any]:
    return {
        "error": {
            "code": rejection.status,
            "message": rejection.message,
            "status": _GEMINI_STATUS.get(rejection.status, "UNKNOWN"),
        }
    }
