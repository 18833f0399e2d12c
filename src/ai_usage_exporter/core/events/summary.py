"""The query-summary line (`event: token_usage_summary`): one event per inference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.events.model import (
    TOKEN_ALIASES,
    Limits,
    UsageEvent,
    _int,
    _number,
    format_timestamp,
    parse_timestamp,
)
from ai_usage_exporter.core.events.validate import (
    INFERENCE_FIELDS,
    QUERY_FIELDS,
    SUMMARY_ONLY_FIELDS,
    TOTALS_FIELDS,
    _build,
    _text,
    _unknown,
    unknown_fields_message,
)
from ai_usage_exporter.core.shapes import (
    USAGE_FIELDS,
)
from ai_usage_exporter.core.shapes import Invalid as _Invalid
from ai_usage_exporter.core.shapes import describe as _describe

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
