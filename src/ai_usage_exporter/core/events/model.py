"""The usage event's schema: `UsageEvent`, `Limits`, the errors, and the field primitives.

Everything here is pure: the validators in `validate`, `usage` and `summary` build on it.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ai_usage_exporter.core.shapes import Invalid as _Invalid
from ai_usage_exporter.core.shapes import (
    check_int,
)
from ai_usage_exporter.core.shapes import describe as _describe

ATTRIBUTION_FIELDS: tuple[str, ...] = (
    "tenant",
    "user",
    "session_id",
    "query_id",
    "workflow_id",
    "agent",
    "task",
    "tool",
    "node",
    "step",
    # The gateway key a call was made with (its name, never the secret); see gateway/keys.py.
    "key",
)

LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error")
# Spellings of a level that people (and Python's logging, and --log-level) use.
LEVEL_ALIASES: dict[str, str] = {"warning": "warn"}
STATUSES: tuple[str, ...] = ("ok", "error")

# Aliases in the OpenAI Chat Completions spelling, accepted as flat fields.
TOKEN_ALIASES: dict[str, str] = {
    "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request or event may carry; see the README's security section."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_events_per_request: int = 10_000
    max_label_length: int = 256
    max_string_length: int = 1024
    max_metadata_bytes: int = 16 * 1024
    max_text_bytes: int = 64 * 1024
    max_tokens: int = 100_000_000
    max_duration_ms: float = 24 * 3600 * 1000.0
    max_cost_usd: float = 1_000_000.0
    max_age_seconds: float = 400 * 24 * 3600.0
    max_future_seconds: float = 3600.0
    # The zone a timestamp without an offset is read in, where one is accepted (the
    # query-summary line, a logger's line in an import): an IANA name (`naive_timezone:`).
    naive_timezone: str = "UTC"


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class UsageEvent:
    """One LLM call, normalised: input includes cached and cache-write tokens, output
    includes reasoning tokens; every sub-kind is a subset of its parent.

    ``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written for an hour;
    image, audio and video tokens are parts of input or output, and
    ``cached_audio_input_tokens``, ``cached_image_input_tokens`` and
    ``cached_video_input_tokens`` the parts of ``cached_input_tokens`` that are also
    audio, image or video; ``web_search_requests`` counts
    server-side searches billed per request. ``provider_cost_usd`` is the bill the
    provider reported in its response, ``service_tier`` the tier that served the call.
    """

    provider: str
    model: str
    operation: str = "chat"
    service: str = "default"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    cache_write_1h_tokens: int = 0
    image_input_tokens: int = 0
    image_output_tokens: int = 0
    cached_audio_input_tokens: int = 0
    cached_image_input_tokens: int = 0
    video_input_tokens: int = 0
    video_output_tokens: int = 0
    cached_video_input_tokens: int = 0
    web_search_requests: int = 0
    service_tier: str | None = None
    duration_ms: float | None = None
    ttft_ms: float | None = None
    status: str = "ok"
    error_type: str | None = None
    level: str = "info"
    tenant: str | None = None
    user: str | None = None
    session_id: str | None = None
    query_id: str | None = None
    workflow_id: str | None = None
    agent: str | None = None
    task: str | None = None
    tool: str | None = None
    node: str | None = None
    step: str | None = None
    key: str | None = None
    idempotency_key: str | None = None
    # Built directly (not parsed), an event happens now; prices that change over time use it.
    timestamp: float = field(default_factory=time.time)
    cost_usd: float | None = None
    provider_cost_usd: float | None = None
    metadata: dict[str, Any] | None = None
    prompt_text: str | None = None
    response_text: str | None = None
    # The timing and text of the user query this call served (a query summary's
    # start_time, end_time, duration_seconds and mensaje); epoch seconds and ms.
    query_start: float | None = None
    query_end: float | None = None
    query_duration_ms: float | None = None
    query_text: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def timestamp_rfc3339(self) -> str:
        return format_timestamp(self.timestamp)


def event_fields(e: UsageEvent) -> dict[str, Any]:
    """An event built in code as the mapping a client would post: the fields that differ
    from their defaults, so it is validated, and defaulted, exactly like a posted one."""
    return {
        name: value
        for name, default in _EVENT_DEFAULTS
        if (value := getattr(e, name)) is not None and value != default
    }


def format_timestamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


_EVENT_DEFAULTS: tuple[tuple[str, Any], ...] = tuple(
    (f.name, f.default) for f in UsageEvent.__dataclass_fields__.values()
)


@dataclass(frozen=True, slots=True)
class FieldError:
    index: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


@dataclass(slots=True)
class EventError(Exception):
    """Raised with every problem found in a request; nothing from it may be recorded."""

    details: list[FieldError] = field(default_factory=list)

    @property
    def message(self) -> str:
        n = len(self.details)
        first = self.details[0] if self.details else None
        if first is None:
            return "invalid usage event"
        head = f"event {first.index}: {first.field}: {first.message}"
        return head if n == 1 else f"{head} (and {n - 1} more problems)"

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------- primitives


def _int(name: str, value: object, limits: Limits) -> int:
    return check_int(name, value, limits.max_tokens)


def _number(name: str, value: object, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(name, f"must be a number, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _Invalid(name, f"must be finite, got {value}")
    if number < 0:
        raise _Invalid(name, f"must be >= 0, got {value}")
    if number > maximum:
        raise _Invalid(name, f"must be <= {maximum:g}, got {value}")
    return number


def _string(name: str, value: object, max_length: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _Invalid(name, f"must be a string, got {_describe(value)}")
    if not value and not allow_empty:
        raise _Invalid(name, "must not be empty")
    if len(value) > max_length:
        raise _Invalid(name, f"is {len(value)} characters long; the limit is {max_length}")
    if value.isascii() and value.isprintable():
        return value
    if not _printable_enough(value):
        raise _Invalid(name, f"must not contain control characters, got {_describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(name, "is not valid UTF-8 (it holds a lone surrogate)") from None
    return value


def _printable_enough(value: str) -> bool:
    # isprintable() also rejects spaces other than ' ' and some format characters
    # (e.g. zero-width joiners in emoji); only C0/C1 controls and DEL are refused.
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _Invalid(name, f"must be one of {', '.join(allowed)}; got {_describe(value)}")
    return value


def naive_zone(name: str) -> tzinfo:
    """The zone an IANA name names (`UTC` included); ValueError naming it when unknown."""
    if name == "UTC":
        return UTC
    try:
        return _zoneinfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; give an IANA name such as UTC or "
            "America/Argentina/Buenos_Aires"
        ) from None


@functools.lru_cache(maxsize=64)
def _zoneinfo(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_timestamp(
    name: str, value: object, *, assume_utc: bool = False, zone: str = "UTC"
) -> float:
    """RFC 3339 text or seconds since the epoch, as epoch seconds.

    With `assume_utc`, text without an offset is accepted and read in `zone` (UTC by
    default; the name is kept for its callers).
    """
    if isinstance(value, bool):
        raise _Invalid(name, f"must be an RFC 3339 timestamp, got {_describe(value)}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _Invalid(name, f"must be finite, got {value}")
        return float(value)
    if not isinstance(value, str) or len(value) > 64:
        raise _Invalid(name, f"must be an RFC 3339 timestamp, got {_describe(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid(
            name,
            f"must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z, got {_describe(value)}",
        ) from None
    if parsed.tzinfo is None:
        if not assume_utc:
            raise _Invalid(name, f"needs a UTC offset (e.g. a trailing Z), got {_describe(value)}")
        parsed = parsed.replace(tzinfo=naive_zone(zone))
    return parsed.timestamp()
