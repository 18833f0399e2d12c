"""One event's fields: the names allowed, their kinds, and building a `UsageEvent`."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import orjson

from ai_usage_exporter.core.events.model import (
    ATTRIBUTION_FIELDS,
    LEVEL_ALIASES,
    LEVELS,
    STATUSES,
    TOKEN_ALIASES,
    Limits,
    UsageEvent,
    _choice,
    _int,
    _number,
    _string,
    parse_timestamp,
)
from ai_usage_exporter.core.events.usage import (
    _check_subsets,
    _fill_from,
    _flat_counts,
    _Found,
    _source_counts,
)
from ai_usage_exporter.core.shapes import (
    USAGE_FIELDS,
)
from ai_usage_exporter.core.shapes import Invalid as _Invalid
from ai_usage_exporter.core.shapes import describe as _describe

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
                kw[name] = parse_timestamp(
                    name, value, assume_utc=assume_utc, zone=limits.naive_timezone
                )
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


_USAGE_SET = frozenset(USAGE_FIELDS)
_TYPED_LABELS = frozenset(name for name, code in _FAST_KIND.items() if code == _F_LABEL)
_ATTRIBUTION_SET = frozenset(ATTRIBUTION_FIELDS)
# Counts no subset rule bounds from above: with only these, `_check_subsets` holds.
_PARENT_COUNTS = frozenset(("input_tokens", "output_tokens", "web_search_requests"))


def typed_event(
    labels: Mapping[str, str],
    attribution: Mapping[str, str],
    counts: Mapping[str, int],
    limits: Limits,
    now: float,
    *,
    timestamp: float,
    status: str = "ok",
    level: str | None = None,
    duration_ms: float | None = None,
    ttft_ms: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> UsageEvent | None:
    """The event `_build` would make of fields whose kinds the caller already knows.

    For a sender that holds typed values (the OTLP mapper): the checks `_fast_build`
    makes, without its per-field dispatch. `labels` are label fields (provider, model,
    operation, service, error_type, idempotency_key, service_tier), `attribution` the
    attribution fields, `counts` canonical token counts. None asks the caller to parse
    the same fields as a mapping, which words the error (or accepts what only `_build`
    reads, a non-ASCII label say); tests/test_events_fast.py checks the two agree.
    """
    if not (_TYPED_LABELS.issuperset(labels) and _ATTRIBUTION_SET.issuperset(attribution)):
        return None
    limit = limits.max_label_length
    for v in labels.values():
        if type(v) is not str or not v or len(v) > limit or not (v.isascii() and v.isprintable()):
            return None
    if "provider" not in labels or "model" not in labels:
        return None
    limit = limits.max_string_length
    for v in attribution.values():
        if type(v) is not str or not v or len(v) > limit or not (v.isascii() and v.isprintable()):
            return None
    max_tokens = limits.max_tokens
    for n in counts.values():
        if type(n) is not int or not 0 <= n <= max_tokens:  # a bool is refused, as in _build
            return None
    if not _USAGE_SET.issuperset(counts):
        return None
    if not _PARENT_COUNTS.issuperset(counts):  # a sub-count: the subset rules apply
        full = dict.fromkeys(USAGE_FIELDS, 0)
        full.update(counts)
        try:
            _check_subsets(full)
        except _Invalid:
            return None
    if not now - limits.max_age_seconds <= timestamp <= now + limits.max_future_seconds:
        return None
    if status not in STATUSES or (level is not None and level not in LEVELS):
        return None
    max_ms = limits.max_duration_ms
    if duration_ms is not None:
        if not 0 <= duration_ms <= max_ms:
            return None
        duration_ms = float(duration_ms)
    if ttft_ms is not None:
        if not 0 <= ttft_ms <= max_ms:
            return None
        ttft_ms = float(ttft_ms)
    if metadata is not None:
        try:
            metadata = _metadata(metadata, limits)
        except _Invalid:
            return None
    # One call with the kinds apart; mypy cannot see that the three maps hold disjoint
    # fields of the right types, which the checks above ensure.
    fields: dict[str, Any] = {**labels, **attribution, **counts}
    return UsageEvent(
        **fields,
        timestamp=float(timestamp),
        status=status,
        level=level if level is not None else ("error" if status == "error" else "info"),
        duration_ms=duration_ms,
        ttft_ms=ttft_ms,
        metadata=metadata,
    )


def _timestamp_in_window(value: object, now: float, limits: Limits, assume_utc: bool) -> float:
    ts = parse_timestamp("timestamp", value, assume_utc=assume_utc, zone=limits.naive_timezone)
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
