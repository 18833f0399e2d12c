"""The usage event: its schema, validation, and the mapping of provider usage shapes.

Everything here is pure: a JSON value goes in, `UsageEvent` objects or an
`EventError` listing every problem come out. The HTTP layer and the in-process
`Recorder` both go through `parse_events`, so one set of rules holds everywhere.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from .shapes import (
    COUNT_FIELDS,
    STANDARD_TIERS,
    STREAM_FORMATS,
    TOKEN_FIELDS,
    USAGE_FIELDS,
    Reading,
    StreamFolder,
    check_int,
    read_response,
    read_usage,
    usage_shape,
)
from .shapes import Invalid as _Invalid
from .shapes import describe as _describe
from .shapes._common import CACHED_MODALITIES
from .shapes.openai import provider_hint

__all__ = (
    "COUNT_FIELDS",
    "STANDARD_TIERS",
    "TOKEN_FIELDS",
    "USAGE_FIELDS",
    "EventError",
    "FieldError",
    "Limits",
    "UsageEvent",
    "normalise_usage",
    "parse_event",
    "parse_events",
    "usage_shape",
)

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


def parse_timestamp(name: str, value: object, *, assume_utc: bool = False) -> float:
    """RFC 3339 text or seconds since the epoch, as epoch seconds."""
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
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# ---------------------------------------------------------------- provider shapes


def normalise_usage(
    usage: Mapping[str, Any],
    where: str = "usage",
    limits: Limits = DEFAULT_LIMITS,
    provider: str | None = None,
) -> dict[str, int]:
    """Map a provider's own usage object to our token and request counts.

    Anthropic and Bedrock report input without the cache counts, so they are added
    back; Gemini reports thoughts beside the candidates, so they are added to output;
    a provider that reports reasoning beside the completion (xAI) has it added to
    output. The mapping of each family lives in `ai_usage_exporter.shapes`.
    """
    return read_usage(usage, where, limits.max_tokens, provider).counts


# ---------------------------------------------------------------- one event

_LABEL_FIELDS = ("provider", "model", "operation", "service")
QUERY_FIELDS: tuple[str, ...] = ("query_start", "query_end", "query_duration_ms", "query_text")
_SCALAR_FIELDS = frozenset(
    (
        *_LABEL_FIELDS,
        *USAGE_FIELDS,
        *TOKEN_ALIASES,
        *ATTRIBUTION_FIELDS,
        "total_tokens",
        "service_tier",
        "provider_cost_usd",
        "duration_ms",
        "ttft_ms",
        "status",
        "error_type",
        "level",
        "idempotency_key",
        "timestamp",
        "cost_usd",
        "metadata",
        "prompt_text",
        "response_text",
        *QUERY_FIELDS,
    )
)
_SOURCES = ("usage", "usageMetadata", "response", "stream")
EVENT_FIELDS = frozenset((*_SCALAR_FIELDS, *_SOURCES, "stream_format"))

# A query summary's own fields, besides the event fields its inferences share.
SUMMARY_ONLY_FIELDS: tuple[str, ...] = (
    "event",
    "whatsapp",
    "inferences",
    "inference_count",
    "totals",
    "total_prompt_tokens",
    "total_completion_tokens",
    "mensaje",
    "start_time",
    "end_time",
    "duration_seconds",
)
SUMMARY_FIELDS = frozenset((*(EVENT_FIELDS - {*_SOURCES, "stream_format"}), *SUMMARY_ONLY_FIELDS))
TOTALS_FIELDS: tuple[str, ...] = ("prompt_tokens", "completion_tokens", "total_tokens")
INFERENCE_FIELDS = frozenset((*(EVENT_FIELDS - {"metadata"}), "node_name", "inference_type"))


def _unknown(obj: Mapping[str, Any], allowed: frozenset[str]) -> list[str]:
    return [k for k in obj if k not in allowed]


def _did_you_mean(name: object, allowed: frozenset[str] | tuple[str, ...]) -> str | None:
    if not isinstance(name, str):
        return None
    close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.75)
    return close[0] if close else None


def unknown_fields_message(
    bad: list[Any], allowed: frozenset[str] | tuple[str, ...], hint: str = ""
) -> str:
    """Name each unknown field, with the known field it was most likely meant to be.

    >>> unknown_fields_message(["prompt_token"], EVENT_FIELDS)
    "unknown field 'prompt_token'; did you mean 'prompt_tokens'?"
    """
    if len(bad) == 1:
        guess = _did_you_mean(bad[0], allowed)
        if guess is not None:
            return f"unknown field {str(bad[0])!r}; did you mean {guess!r}?"
        return f"unknown field {str(bad[0])!r}{hint}"
    names = []
    for name in bad:
        guess = _did_you_mean(name, allowed)
        names.append(f"{str(name)!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
    return f"unknown fields {', '.join(names)}{hint}"


# How each flat field is checked; _build walks only the keys an event has.
_KIND: dict[str, str] = {
    "provider": "required",
    "model": "required",
    "operation": "label",
    "service": "label",
    "error_type": "label",
    "idempotency_key": "label",
    **dict.fromkeys(USAGE_FIELDS, "token"),
    **dict.fromkeys(TOKEN_ALIASES, "token"),
    "service_tier": "label",
    "provider_cost_usd": "cost",
    "total_tokens": "total",
    **dict.fromkeys(ATTRIBUTION_FIELDS, "attribution"),
    "duration_ms": "ms",
    "ttft_ms": "ms",
    "status": "status",
    "level": "level",
    "timestamp": "timestamp",
    "cost_usd": "cost",
    "metadata": "metadata",
    "prompt_text": "text",
    "response_text": "text",
    "query_start": "query_time",
    "query_end": "query_time",
    "query_duration_ms": "ms",
    "query_text": "text",
    "usage": "source",
    "usageMetadata": "source",
    "response": "source",
    "stream": "source",
    "stream_format": "stream_format",
}
# Problems are reported in this order, whatever the order of keys in the JSON.
_FIELD_ORDER = {
    name: i
    for i, name in enumerate(
        (
            "provider", "model", "operation", "service", *USAGE_FIELDS, *TOKEN_ALIASES,
            "total_tokens", "usage", "usageMetadata", "response", "stream", "stream_format",
            "service_tier",
            "duration_ms", "ttft_ms",
            "status", "level", "error_type", *ATTRIBUTION_FIELDS, "idempotency_key",
            "timestamp", "cost_usd", "provider_cost_usd", "metadata", "prompt_text",
            "response_text", *QUERY_FIELDS,
        )
    )
}  # fmt: skip


def _order(exc: _Invalid) -> int:
    return _FIELD_ORDER.get(exc.field.split(".", 1)[0].split("[", 1)[0], len(_FIELD_ORDER))


def _build(
    obj: Mapping[str, Any],
    limits: Limits,
    now: float,
    errors: list[_Invalid],
    *,
    assume_utc: bool = False,
) -> UsageEvent | None:
    """Validate one flat event object; append problems to `errors`."""
    mine: list[_Invalid] = []
    kw: dict[str, Any] = {}
    flat: dict[str, int] = {}
    sources: list[str] = []
    label_max = limits.max_label_length
    for name, value in obj.items():
        if value is None:
            continue
        kind = _KIND.get(name)
        if kind is None:
            mine.append(_Invalid(name, unknown_fields_message([name], EVENT_FIELDS)))
            continue
        try:
            if kind == "label" or kind == "required":
                kw[name] = _string(name, value, label_max)
            elif kind == "token":
                flat[name] = _int(name, value, limits)
            elif kind == "attribution":
                if name == "step" and isinstance(value, int) and not isinstance(value, bool):
                    value = str(value)
                kw[name] = _string(name, value, limits.max_string_length)
            elif kind == "ms":
                kw[name] = _number(name, value, limits.max_duration_ms)
            elif kind == "status":
                kw[name] = _choice(name, value, STATUSES)
            elif kind == "level":
                kw[name] = _choice(
                    name,
                    LEVEL_ALIASES.get(value, value) if isinstance(value, str) else value,
                    LEVELS,
                )
            elif kind == "source":
                sources.append(name)
            elif kind == "stream_format":
                if "stream" not in obj:
                    raise _Invalid(name, "is only meaningful with `stream`")
            elif kind == "total":
                _int(name, value, limits)
            elif kind == "timestamp":
                kw[name] = _timestamp_in_window(value, now, limits, assume_utc)
            elif kind == "query_time":
                kw[name] = parse_timestamp(name, value, assume_utc=assume_utc)
            elif kind == "cost":
                kw[name] = _number(name, value, limits.max_cost_usd)
            elif kind == "metadata":
                kw[name] = _metadata(value, limits)
            else:  # text
                kw[name] = _text(name, value, limits)
        except _Invalid as exc:
            mine.append(exc)

    found: _Found | None = None
    try:
        if sources:
            found = _Found()
            counts = _source_counts(obj, flat, sources, limits, kw.get("provider"), found)
        else:
            counts = _flat_counts(obj, flat)
    except _Invalid as exc:
        mine.append(exc)
    if found is not None:
        _fill_from(found, kw, mine, limits)
    elif "provider" not in kw or "model" not in kw:
        for name in ("provider", "model"):
            if name not in kw and not any(e.field == name for e in mine):
                mine.append(_Invalid(name, "is required"))
    if "level" not in kw:
        kw["level"] = "error" if kw.get("status") == "error" else "info"
    if "timestamp" not in kw:
        kw["timestamp"] = now

    if mine:
        mine.sort(key=_order)
        errors.extend(mine)
        return None
    kw.update(counts)
    return UsageEvent(**kw)


# The common flat event, checked inline: every key of one of these kinds, every value
# of the plain type. Anything else (or anything wrong) takes `_build`, which alone
# words the errors; tests/test_events_fast.py checks the two agree on random input.
_F_LABEL, _F_ATTR, _F_TOKEN, _F_ALIAS, _F_TOTAL, _F_STATUS, _F_LEVEL, _F_NUMBER = range(8)
_FAST_KIND: dict[str, int] = {
    **dict.fromkeys(
        ("provider", "model", "operation", "service", "error_type", "idempotency_key",
         "service_tier"), _F_LABEL),
    **dict.fromkeys(ATTRIBUTION_FIELDS, _F_ATTR),
    **dict.fromkeys(USAGE_FIELDS, _F_TOKEN),
    **dict.fromkeys(TOKEN_ALIASES, _F_ALIAS),
    "total_tokens": _F_TOTAL,
    "status": _F_STATUS,
    "level": _F_LEVEL,
    **dict.fromkeys(("timestamp", "duration_ms", "ttft_ms", "cost_usd", "provider_cost_usd"),
                    _F_NUMBER),
}  # fmt: skip


def _fast_build(obj: Mapping[str, Any], limits: Limits, now: float) -> UsageEvent | None:
    """The event `_build` would make of a plain flat object, or None to ask `_build`."""
    kw: dict[str, Any] = {}
    counts = dict.fromkeys(USAGE_FIELDS, 0)
    max_tokens = limits.max_tokens
    total = 0
    get_kind = _FAST_KIND.get
    for name, value in obj.items():
        code = get_kind(name)
        if code is None:
            return None
        if value is None:
            continue
        kind = type(value)
        if code <= _F_ATTR:
            if kind is not str or not value:
                return None
            limit = limits.max_label_length if code == _F_LABEL else limits.max_string_length
            if len(value) > limit or not (value.isascii() and value.isprintable()):
                return None
            kw[name] = value
        elif code <= _F_TOTAL:
            if kind is not int or not 0 <= value <= max_tokens:
                return None
            if code == _F_TOKEN:
                counts[name] = value
            elif code == _F_ALIAS:
                canonical = TOKEN_ALIASES[name]
                if canonical in obj:
                    return None
                counts[canonical] = value
            else:
                total = value
        elif code == _F_NUMBER:
            if kind is not float and kind is not int:
                return None
            # NaN fails every comparison, so it goes to _build as well; an int is
            # compared as it is (no float() overflow) and stored as _build stores it.
            if name == "timestamp":
                ok = now - limits.max_age_seconds <= value <= now + limits.max_future_seconds
            elif name == "duration_ms" or name == "ttft_ms":
                ok = 0 <= value <= limits.max_duration_ms
            else:
                ok = 0 <= value <= limits.max_cost_usd
            if not ok:
                return None
            kw[name] = float(value)
        else:
            if kind is not str or value not in (STATUSES if code == _F_STATUS else LEVELS):
                return None
            kw[name] = value
    if "provider" not in kw or "model" not in kw:
        return None
    if total and not counts["input_tokens"] and not counts["output_tokens"]:
        return None
    try:
        _check_subsets(counts)  # the same rules, whatever counts are added to them
    except _Invalid:
        return None
    if "level" not in kw:
        kw["level"] = "error" if kw.get("status") == "error" else "info"
    if "timestamp" not in kw:
        kw["timestamp"] = now
    kw.update(counts)
    return UsageEvent(**kw)


def _timestamp_in_window(value: object, now: float, limits: Limits, assume_utc: bool) -> float:
    ts = parse_timestamp("timestamp", value, assume_utc=assume_utc)
    if ts < now - limits.max_age_seconds:
        raise _Invalid(
            "timestamp",
            f"{_describe(value)} is more than {limits.max_age_seconds / 86400:g} days in the past",
        )
    if ts > now + limits.max_future_seconds:
        raise _Invalid(
            "timestamp",
            f"{_describe(value)} is more than {limits.max_future_seconds:g} s in the future",
        )
    return ts


def _metadata(value: object, limits: Limits) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid("metadata", f"must be a JSON object, got {_describe(value)}")
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:  # non-string keys from in-process callers, or unserialisable values
        raise _Invalid("metadata", f"must be plain JSON: {exc}") from None
    if size > limits.max_metadata_bytes:
        raise _Invalid(
            "metadata", f"is {size} bytes as JSON; the limit is {limits.max_metadata_bytes}"
        )
    return value


def _text(name: str, value: object, limits: Limits) -> str:
    if not isinstance(value, str):
        raise _Invalid(name, f"must be a string, got {_describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # The ledger could never store it: its write would fail, and be retried, forever.
        raise _Invalid(name, "is not valid UTF-8 (it holds a lone surrogate)") from None
    return value


@dataclass(slots=True)
class _Found:
    """What a provider object said besides its counts."""

    source: str = ""
    provider: str | None = None
    model: str | None = None
    duration_ms: float | None = None
    service_tier: str | None = None
    cost_usd: float | None = None


def _fill_from(found: _Found, kw: dict[str, Any], mine: list[_Invalid], limits: Limits) -> None:
    """What a provider object said fills only what the event left out."""
    for name, value in (("provider", found.provider), ("model", found.model)):
        if name not in kw and value is not None and not any(e.field == name for e in mine):
            try:
                kw[name] = _string(name, value, limits.max_label_length)
            except _Invalid as exc:
                mine.append(_Invalid(name, f"(from {found.source}) {exc.message}"))
    for name in ("provider", "model"):
        if name not in kw and not any(e.field == name for e in mine):
            hint = (
                "; it could not be told from the usage object's shape"
                if name == "provider" and found.source
                else ""
            )
            mine.append(_Invalid(name, f"is required{hint}"))
    if "duration_ms" not in kw and found.duration_ms is not None:
        kw["duration_ms"] = found.duration_ms
    if "service_tier" not in kw and found.service_tier is not None:
        kw["service_tier"] = found.service_tier
    if "provider_cost_usd" not in kw and found.cost_usd is not None:
        if found.cost_usd <= limits.max_cost_usd:
            kw["provider_cost_usd"] = found.cost_usd


def _source_counts(
    obj: Mapping[str, Any],
    flat: dict[str, int],
    sources: list[str],
    limits: Limits,
    provider: str | None,
    found: _Found,
) -> dict[str, int]:
    """The counts from `usage`, `usageMetadata`, `response` or `stream`.

    A provider's own object is mapped and, if inconsistent, clamped (never refused for
    its arithmetic); flat fields are checked strictly by `_flat_counts`.
    """
    if len(sources) > 1:
        raise _Invalid(
            sources[1],
            f"give one of usage, usageMetadata, response or stream, not {' and '.join(sources)}",
        )
    if flat:
        raise _Invalid(
            next(iter(flat)),
            f"give token counts either as flat fields or inside {sources[0]}, not both",
        )
    key = sources[0]
    container = obj[key]
    found.source = key
    if key == "stream":
        if not isinstance(container, list) or not all(isinstance(e, Mapping) for e in container):
            raise _Invalid(
                key,
                f"must be an array of decoded stream events (objects), got {_describe(container)}",
            )
        return _stream_counts(obj, container, limits, provider, found)
    if (
        key == "response"
        and isinstance(container, list)
        and container
        and all(isinstance(e, Mapping) for e in container)
        and _stream_format(container) == "gemini"
    ):
        # Gemini's streamGenerateContent without `alt=sse` answers with one JSON array
        # of the chunks: the whole body is the stream, so it is folded as one.
        return _stream_counts(obj, container, limits, provider, found)
    if not isinstance(container, Mapping):
        raise _Invalid(key, f"must be a JSON object, got {_describe(container)}")
    if key == "response":
        got = read_response(container, limits.max_tokens, provider)
        reading = got.reading
        found.provider = got.provider
        found.model = got.model
        found.duration_ms = got.duration_ms
    else:
        shape = "gemini" if key == "usageMetadata" else None
        reading = read_usage(container, key, limits.max_tokens, provider, shape)
        if provider is None:
            found.provider = _provider_of_usage(container)
    found.service_tier = reading.service_tier
    found.cost_usd = reading.cost_usd
    return reading.counts


def _flat_counts(obj: Mapping[str, Any], flat: dict[str, int]) -> dict[str, int]:
    """The counts from flat fields; a sub-count above its parent is the caller's mistake."""
    counts = dict.fromkeys(USAGE_FIELDS, 0)
    for name, value in flat.items():
        canonical = TOKEN_ALIASES.get(name)
        if canonical is not None:
            if canonical in flat:
                raise _Invalid(name, f"is an alias of {canonical}; give one of them, not both")
            name = canonical
        counts[name] = value
    total = obj.get("total_tokens")
    if total and not counts["input_tokens"] and not counts["output_tokens"]:
        raise _Invalid(
            "total_tokens",
            "cannot be split into input and output; send input_tokens and output_tokens",
        )
    _check_subsets(counts)
    return counts


def _stream_format(events: list[Mapping[str, Any]]) -> str | None:
    """The stream format a list of decoded events is in, told by the events' own keys."""
    for e in events:
        kind = e.get("type")
        if isinstance(kind, str):
            if kind.startswith("response."):
                return "openai_responses"
            if kind.startswith(("message_", "content_block_")):
                return "anthropic"
            if kind.startswith(("message-", "content-", "tool-call-", "tool-plan-", "citation-")):
                return "cohere"
        if e.get("object") == "chat.completion.chunk" or "choices" in e:
            return "openai_chat"
        if "usageMetadata" in e or "candidates" in e:
            return "gemini"
        if "done" in e and ("message" in e or "response" in e or "eval_count" in e):
            return "ollama"
        if any(k in e for k in ("messageStart", "contentBlockDelta", "messageStop", "metadata")):
            return "bedrock"
    return None


_FORMAT_PROVIDER = {
    "anthropic": "anthropic",
    "gemini": "google",
    "ollama": "ollama",
    "bedrock": "bedrock",
    "cohere": "cohere",
}


def _stream_counts(
    obj: Mapping[str, Any],
    events: list[Mapping[str, Any]],
    limits: Limits,
    provider: str | None,
    found: _Found,
) -> dict[str, int]:
    """Fold a streamed call's decoded events and map the usage object like a response's."""
    fmt = obj.get("stream_format")
    if fmt is None:
        fmt = _stream_format(events)
        if fmt is None:
            raise _Invalid(
                "stream_format",
                "is required: the stream's events do not tell their format; give one of "
                + ", ".join(STREAM_FORMATS),
            )
    if fmt not in STREAM_FORMATS:
        raise _Invalid(
            "stream_format", f"must be one of {', '.join(STREAM_FORMATS)}; got {_describe(fmt)}"
        )
    folder = StreamFolder(fmt)
    for event in events:
        folder.add(event)
    usage = folder.usage
    if usage is None:
        if not events:
            raise _Invalid("stream", "holds no events")
        # A stream that ended without a usage report (OpenAI Chat without
        # `stream_options.include_usage`, a failed Responses stream, a ConverseStream cut
        # before its metadata) is still a call: counted with no tokens, not refused.
        usage = {}
    hint: str | None = _FORMAT_PROVIDER.get(fmt)
    tier: str | None = None
    for event in events:
        if hint is None:
            hint = provider_hint(event)
        if isinstance(event.get("service_tier"), str):
            tier = event["service_tier"]
    if hint is None and fmt.startswith("openai"):
        hint = "openai"
    if usage:
        reading = read_usage(usage, "stream", limits.max_tokens, provider or hint)
    else:
        reading = Reading(notes=["stream: no usage reported; counted with 0 tokens"])
    found.provider = hint
    found.model = folder.model
    found.service_tier = reading.service_tier or (tier.lower() if tier else None)
    found.cost_usd = reading.cost_usd
    return reading.counts


def _provider_of_usage(usage: Mapping[str, Any]) -> str | None:
    """The provider a bare usage object's shape names unambiguously, if any."""
    from .shapes import SHAPE_PROVIDER
    from .shapes.openai import provider_hint

    shape = usage_shape(usage)
    if shape in SHAPE_PROVIDER:
        return SHAPE_PROVIDER[shape]
    return provider_hint({"usage": usage})


def _check_subsets(c: dict[str, int]) -> None:
    if c["cached_input_tokens"] + c["cache_write_tokens"] > c["input_tokens"]:
        raise _Invalid(
            "cached_input_tokens",
            f"cached_input_tokens ({c['cached_input_tokens']}) + cache_write_tokens "
            f"({c['cache_write_tokens']}) exceed input_tokens ({c['input_tokens']}); input_tokens "
            "must include them (send the provider's own usage object as `usage` to have it mapped)",
        )
    if c["cache_write_1h_tokens"] > c["cache_write_tokens"]:
        raise _Invalid(
            "cache_write_1h_tokens",
            f"cache_write_1h_tokens ({c['cache_write_1h_tokens']}) exceeds cache_write_tokens "
            f"({c['cache_write_tokens']}), which must include it",
        )
    for name in ("audio_input_tokens", "image_input_tokens", "video_input_tokens"):
        if c[name] > c["input_tokens"]:
            raise _Invalid(name, "exceeds input_tokens, which must include it")
    for name, parent in CACHED_MODALITIES.items():
        for whole in ("cached_input_tokens", parent):
            if c[name] > c[whole]:
                raise _Invalid(
                    name, f"{name} ({c[name]}) exceeds {whole} ({c[whole]}), which must include it"
                )
    if c["reasoning_tokens"] + c["audio_output_tokens"] > c["output_tokens"]:
        raise _Invalid(
            "reasoning_tokens",
            f"reasoning_tokens ({c['reasoning_tokens']}) + audio_output_tokens "
            f"({c['audio_output_tokens']}) exceed output_tokens ({c['output_tokens']}), "
            "which must include them",
        )
    for name in ("image_output_tokens", "video_output_tokens"):
        if c[name] > c["output_tokens"]:
            raise _Invalid(name, "exceeds output_tokens, which must include it")


# ---------------------------------------------------------------- requests


def _summary_query(obj: Mapping[str, Any], limits: Limits) -> tuple[dict[str, Any], list[_Invalid]]:
    """The query's own text and timing (`mensaje`, `start_time`, ...) as event fields."""
    out: dict[str, Any] = {}
    errors: list[_Invalid] = []
    pairs = (("mensaje", "query_text"), ("start_time", "query_start"), ("end_time", "query_end"))
    for theirs, ours in pairs:
        if obj.get(theirs) is not None and obj.get(ours) is not None:
            errors.append(_Invalid(theirs, f"is the same as {ours}; give one of them, not both"))
    for theirs, ours in (*pairs, ("duration_seconds", "query_duration_ms")):
        value = obj.get(theirs, obj.get(ours))
        name = theirs if obj.get(theirs) is not None else ours
        if value is None:
            continue
        try:
            if ours == "query_text":
                out[ours] = _text(name, value, limits)
            elif ours == "query_duration_ms":
                if name == "duration_seconds":
                    out[ours] = _number(name, value, limits.max_duration_ms / 1000) * 1000
                else:
                    out[ours] = _number(name, value, limits.max_duration_ms)
            else:
                # Like the inferences' timestamps, a time without an offset is UTC.
                out[ours] = parse_timestamp(name, value, assume_utc=True)
        except _Invalid as exc:
            errors.append(exc)
    start, end = out.get("query_start"), out.get("query_end")
    if start is not None and end is not None and end < start:
        errors.append(
            _Invalid(
                "end_time" if "end_time" in obj else "query_end",
                f"{format_timestamp(end)} is before the start {format_timestamp(start)}",
            )
        )
    return out, errors


def _summary_totals(
    obj: Mapping[str, Any], events: list[UsageEvent], limits: Limits
) -> list[_Invalid]:
    """Check `totals` and `total_*_tokens` against the inferences: a corrupt line must
    not count, and a total that disagrees is the sign of one."""
    sums = {
        "prompt_tokens": sum(e.input_tokens for e in events),
        "completion_tokens": sum(e.output_tokens for e in events),
        "total_tokens": sum(e.total_tokens for e in events),
    }
    claims: list[tuple[str, str, object]] = []
    totals = obj.get("totals")
    errors: list[_Invalid] = []
    if totals is not None:
        if not isinstance(totals, Mapping):
            return [_Invalid("totals", f"must be a JSON object, got {_describe(totals)}")]
        bad = _unknown(totals, frozenset(TOTALS_FIELDS))
        if bad:
            errors.append(_Invalid(f"totals.{bad[0]}", unknown_fields_message(bad, TOTALS_FIELDS)))
        claims.extend((f"totals.{k}", k, totals.get(k)) for k in TOTALS_FIELDS)
    claims.append(("total_prompt_tokens", "prompt_tokens", obj.get("total_prompt_tokens")))
    claims.append(
        ("total_completion_tokens", "completion_tokens", obj.get("total_completion_tokens"))
    )
    claims.append(("total_tokens", "total_tokens", obj.get("total_tokens")))
    for name, key, value in claims:
        if value is None:
            continue
        try:
            claimed = _int(name, value, limits)
        except _Invalid as exc:
            errors.append(exc)
            continue
        if claimed != sums[key]:
            errors.append(
                _Invalid(name, f"{name} is {claimed} but the inferences sum to {sums[key]}")
            )
    return errors


def _summary_events(
    obj: Mapping[str, Any], limits: Limits, now: float, errors: list[_Invalid]
) -> list[UsageEvent]:
    """A `token_usage_summary` record becomes one event per inference."""
    inferences = obj.get("inferences")
    if not isinstance(inferences, list) or not inferences:
        errors.append(_Invalid("inferences", "must be a non-empty array of inference objects"))
        return []
    query, query_errors = _summary_query(obj, limits)
    errors.extend(query_errors)
    count = obj.get("inference_count")
    if count is not None:
        try:
            if _int("inference_count", count, limits) != len(inferences):
                errors.append(
                    _Invalid(
                        "inference_count",
                        f"inference_count is {count} but inferences has {len(inferences)} entries",
                    )
                )
        except _Invalid as exc:
            errors.append(exc)
    shared: dict[str, Any] = {
        k: v
        for k, v in obj.items()
        if k not in SUMMARY_ONLY_FIELDS
        and k not in QUERY_FIELDS
        and k not in (*USAGE_FIELDS, *TOKEN_ALIASES, "total_tokens")
    }
    shared.update(query)
    if obj.get("whatsapp") is not None and obj.get("user") is None:
        shared["user"] = (
            obj["whatsapp"]
            if not isinstance(obj["whatsapp"], int | float) or isinstance(obj["whatsapp"], bool)
            else str(obj["whatsapp"])
        )
    base_key = shared.pop("idempotency_key", None)
    events: list[UsageEvent] = []
    complete = True
    for i, inf in enumerate(inferences):
        where = f"inferences[{i}]"
        if not isinstance(inf, Mapping):
            errors.append(_Invalid(where, f"must be an object, got {_describe(inf)}"))
            complete = False
            continue
        bad = _unknown(inf, INFERENCE_FIELDS)
        if bad:
            errors.append(
                _Invalid(f"{where}.{bad[0]}", unknown_fields_message(bad, INFERENCE_FIELDS))
            )
            complete = False
            continue
        merged = dict(shared)
        for k, v in inf.items():
            if k == "node_name":
                merged.setdefault("node", v)
            elif k == "inference_type":
                merged["operation"] = v
            else:
                merged[k] = v
        if "node" in inf:
            merged["node"] = inf["node"]
        if base_key is not None and "idempotency_key" not in inf:
            if isinstance(base_key, str):
                merged["idempotency_key"] = f"{base_key}#{i}"
            else:
                merged["idempotency_key"] = base_key
        sub: list[_Invalid] = []
        event = _build(merged, limits, now, sub, assume_utc=True)
        for problem in sub:
            errors.append(_Invalid(f"{where}.{problem.field}", problem.message))
        if event is not None:
            events.append(event)
        else:
            complete = False
    if complete:
        # Sums over a partly invalid line would only repeat the inferences' own errors.
        errors.extend(_summary_totals(obj, events, limits))
    return events


def parse_event(
    obj: object, limits: Limits = DEFAULT_LIMITS, now: float | None = None
) -> list[UsageEvent]:
    """Validate one JSON value (an event or a query summary); raise EventError."""
    return parse_events([obj], limits, now)


def parse_events(
    items: list[Any], limits: Limits = DEFAULT_LIMITS, now: float | None = None
) -> list[UsageEvent]:
    """Validate a request's events all-or-nothing: every problem is reported, none recorded."""
    if now is None:
        now = time.time()
    if len(items) > limits.max_events_per_request:
        raise EventError(
            [
                FieldError(
                    -1,
                    "events",
                    f"{len(items)} events in one request; the limit is {limits.max_events_per_request}",
                )
            ]
        )
    out: list[UsageEvent] = []
    details: list[FieldError] = []
    for index, obj in enumerate(items):
        errors: list[_Invalid] = []
        if not isinstance(obj, Mapping):
            errors.append(_Invalid("", f"an event must be a JSON object, got {_describe(obj)}"))
        elif obj.get("event") == "token_usage_summary":
            bad = _unknown(obj, SUMMARY_FIELDS)
            if bad:
                errors.append(_Invalid(bad[0], unknown_fields_message(bad, SUMMARY_FIELDS)))
            else:
                out.extend(_summary_events(obj, limits, now, errors))
        elif (event := _fast_build(obj, limits, now)) is not None:
            out.append(event)
        else:
            bad = _unknown(obj, EVENT_FIELDS)
            if bad:
                errors.append(
                    _Invalid(
                        str(bad[0]),
                        unknown_fields_message(
                            bad, EVENT_FIELDS, "; see the event table in the README"
                        ),
                    )
                )
            else:
                event = _build(obj, limits, now, errors)
                if event is not None:
                    out.append(event)
        for exc in errors:
            if len(details) < 100:
                details.append(FieldError(index, exc.field, exc.message))
    if details:
        raise EventError(details)
    return out
