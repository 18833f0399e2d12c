"""A request's events, validated all-or-nothing: every problem is reported, none recorded.

The HTTP layer, the in-process `Recorder`, the importer and the OTLP receiver all go
through `parse_events`, so one set of rules holds everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.events.model import (
    DEFAULT_LIMITS,
    EventError,
    FieldError,
    Limits,
    UsageEvent,
)
from ai_usage_exporter.core.events.summary import _summary_events
from ai_usage_exporter.core.events.validate import (
    EVENT_FIELDS,
    SUMMARY_FIELDS,
    _build,
    _fast_build,
    _unknown,
    unknown_fields_message,
)
from ai_usage_exporter.core.shapes import Invalid as _Invalid
from ai_usage_exporter.core.shapes import describe as _describe


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
