"""The fast path for plain flat events makes exactly the event the full validator makes."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_usage_exporter.core.events.model import ATTRIBUTION_FIELDS, LEVELS, STATUSES, Limits
from ai_usage_exporter.core.events.parse import parse_events
from ai_usage_exporter.core.events.validate import _build, _fast_build, typed_event
from ai_usage_exporter.core.shapes import USAGE_FIELDS, Invalid

NOW = 1_800_000_000.0
# Small bounds, so random values land on both sides of every limit.
LIMITS = Limits(
    max_tokens=1000,
    max_label_length=6,
    max_string_length=9,
    max_duration_ms=5000.0,
    max_cost_usd=2.0,
    max_age_seconds=100.0,
    max_future_seconds=10.0,
)

NAMES = (
    "provider", "model", "operation", "service", "error_type", "idempotency_key",
    "service_tier", *ATTRIBUTION_FIELDS, *USAGE_FIELDS, "prompt_tokens", "completion_tokens",
    "total_tokens", "status", "level", "timestamp", "duration_ms", "ttft_ms", "cost_usd",
    "provider_cost_usd", "metadata", "query_text", "usage", "prompt_token",
)  # fmt: skip

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 1200),
    st.integers(min_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(NOW - 150, NOW + 20),
    st.floats(-1, 6000),
    st.sampled_from(["", "openai", "gpt-4o", "a" * 7, "a" * 10, "x\ty", "é", "warning"]),
    st.sampled_from([*STATUSES, *LEVELS, "2026-01-20T15:30:05Z", "5"]),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
OBJECTS = st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=12)
# Mostly plain events, so the fast path is taken often.
PLAIN = st.fixed_dictionaries(
    {"provider": st.sampled_from(["openai", "p"]), "model": st.sampled_from(["m", "gpt-4o"])},
    optional={
        name: st.one_of(st.integers(0, 1100), st.none())
        for name in (*USAGE_FIELDS, "prompt_tokens", "total_tokens")
    }
    | {
        "timestamp": st.floats(NOW - 150, NOW + 20),
        "duration_ms": st.floats(0, 6000),
        "user": st.text(max_size=10),
        "status": st.sampled_from([*STATUSES, "oops"]),
        "level": st.sampled_from([*LEVELS, "warning"]),
        "step": st.one_of(st.integers(0, 9), st.text(max_size=3)),
    },
)


def _slow(obj: dict[str, Any]) -> tuple[Any, list[Invalid]]:
    errors: list[Invalid] = []
    return _build(obj, LIMITS, NOW, errors), errors


def _agree(obj: dict[str, Any]) -> bool:
    try:
        fast = _fast_build(obj, LIMITS, NOW)
    except Exception as exc:  # the fast path must never fail where _build would answer
        raise AssertionError(f"fast path raised {exc!r} on {obj!r}") from exc
    if fast is None:
        return False
    slow, errors = _slow(obj)
    assert errors == [] and fast == slow, (obj, fast, slow, errors)
    assert all(
        type(getattr(fast, f)) is type(getattr(slow, f))
        for f in ("timestamp", "duration_ms", "input_tokens")
    )
    return True


@settings(deadline=None, max_examples=400, suppress_health_check=list(HealthCheck))
@given(OBJECTS)
def test_fast_path_equals_the_validator_on_any_object(obj: dict[str, Any]) -> None:
    _agree(obj)


@settings(deadline=None, max_examples=400, suppress_health_check=list(HealthCheck))
@given(PLAIN)
def test_fast_path_equals_the_validator_on_plain_events(obj: dict[str, Any]) -> None:
    _agree(obj)


def test_fast_path_takes_the_usual_lines_and_leaves_the_rest() -> None:
    usual = {"provider": "openai", "model": "gpt-4o", "input_tokens": 10,
             "output_tokens": 2, "user": "u1", "query_id": "q1", "timestamp": NOW - 5,
             "idempotency_key": "k1"}  # fmt: skip
    assert _agree(usual)
    assert _agree({"provider": "p", "model": "m", "prompt_tokens": 5, "completion_tokens": 1,
                   "total_tokens": 6, "status": "error"})  # fmt: skip
    assert _fast_build({**usual, "timestamp": "2026-01-20T15:30:05Z"}, LIMITS, NOW) is None
    assert _fast_build({**usual, "level": "warning"}, LIMITS, NOW) is None
    assert _fast_build({**usual, "input_tokens": True}, LIMITS, NOW) is None
    assert _fast_build({**usual, "timestamp": math.nan}, LIMITS, NOW) is None
    # A sub-count above its parent, for every count the validator knows of.
    for name in USAGE_FIELDS:
        if name not in ("input_tokens", "output_tokens", "web_search_requests"):
            odd = {"provider": "p", "model": "m", name: 1}
            assert _fast_build(odd, LIMITS, NOW) is None or _agree(odd), name
    # Through parse_events, the answer is the same either way.
    (event,) = parse_events([usual], LIMITS, NOW)
    assert (event.input_tokens, event.level, event.timestamp) == (10, "info", NOW - 5)


# typed_event: the same event from fields whose kinds the caller knows (the OTLP path).
TYPED_LABELS = ("provider", "model", "operation", "service", "error_type", "idempotency_key",
                "service_tier")  # fmt: skip
# Mostly good values, so the typed path is taken often; each bad kind now and then.
LABEL_VALUES = st.sampled_from(
    ["openai", "gpt-4o", "a" * 6, "chat"] * 6 + ["", "a" * 7, "x\ty", "é"]
)
TYPED = st.fixed_dictionaries(
    {
        "labels": st.fixed_dictionaries(
            {"provider": LABEL_VALUES, "model": LABEL_VALUES},
            optional={name: LABEL_VALUES for name in TYPED_LABELS[2:]},
        ),
        "attribution": st.dictionaries(
            st.sampled_from(("agent", "workflow_id", "session_id", "user", "tenant")),
            st.sampled_from(["u1", "a" * 9] * 6 + ["", "a" * 10, "ü", "x\ny"]),
            max_size=3,
        ),
        "counts": st.one_of(
            st.fixed_dictionaries(
                {"input_tokens": st.integers(0, 1100)},
                optional={
                    "output_tokens": st.integers(0, 1100),
                    "cached_input_tokens": st.integers(0, 30),
                },
            ),
            st.dictionaries(st.sampled_from(USAGE_FIELDS), st.integers(0, 1100), max_size=5),
        ),  # fmt: skip
        "timestamp": st.floats(NOW - 110, NOW + 12),
        "status": st.sampled_from([*STATUSES] * 4 + ["oops"]),
        "level": st.one_of(st.none(), st.none(), st.sampled_from([*LEVELS, "warning"])),
        "duration_ms": st.one_of(st.none(), st.floats(-1, 5500)),
        "ttft_ms": st.one_of(st.none(), st.floats(0, 6000)),
        "metadata": st.one_of(
            st.none(), st.dictionaries(st.sampled_from(("a", "b")), st.integers(), max_size=2)
        ),
    }
)


GOOD_TYPED = st.fixed_dictionaries(
    {
        "labels": st.fixed_dictionaries(
            {"provider": st.just("openai"), "model": st.sampled_from(["gpt-4o", "m"])},
            optional={"service": st.just("svc"), "idempotency_key": st.just("k1")},
        ),
        "attribution": st.dictionaries(st.sampled_from(("agent", "user")), st.just("u1")),
        "counts": st.fixed_dictionaries(
            {"input_tokens": st.integers(30, 1000)},
            optional={
                "output_tokens": st.integers(0, 1000),
                "cached_input_tokens": st.integers(0, 30),
            },
        ),  # fmt: skip
        "timestamp": st.floats(NOW - 90, NOW + 5),
        "status": st.sampled_from(STATUSES),
        "level": st.none(),
        "duration_ms": st.one_of(st.none(), st.floats(0, 4000)),
        "ttft_ms": st.none(),
        "metadata": st.none(),
    }
)


def test_typed_event_equals_the_validator() -> None:
    taken: list[bool] = []

    @settings(deadline=None, max_examples=500, suppress_health_check=list(HealthCheck))
    @given(st.one_of(TYPED, GOOD_TYPED))
    def agree(t: dict[str, Any]) -> None:
        fields: dict[str, Any] = {**t["labels"], **t["attribution"], **t["counts"]}
        for name in ("timestamp", "status", "level", "duration_ms", "ttft_ms", "metadata"):
            if t[name] is not None:
                fields[name] = t[name]
        kinds = {k: t.pop(k) for k in ("labels", "attribution", "counts")}
        typed = typed_event(
            kinds["labels"], kinds["attribution"], kinds["counts"], LIMITS, NOW, **t
        )
        taken.append(typed is not None)
        if typed is None:
            return  # the caller parses `fields`, which gives `_build`'s answer
        slow, errors = _slow(fields)
        assert errors == [] and typed == slow, (fields, typed, slow, errors)

    agree()
    # Not passed by declining everything: the typed path took a good share.
    assert sum(taken) >= len(taken) // 5, (sum(taken), len(taken))


def test_typed_event_takes_a_plain_call() -> None:
    typed = typed_event(
        {"provider": "openai", "model": "gpt-4o"}, {"user": "u1"},
        {"input_tokens": 10, "cached_input_tokens": 4}, LIMITS, NOW, timestamp=NOW - 1,
        duration_ms=12.0,
    )  # fmt: skip
    assert typed is not None
    assert (typed.input_tokens, typed.cached_input_tokens, typed.user, typed.level) == (
        10, 4, "u1", "info")  # fmt: skip
    assert typed_event({"provider": "p", "model": "m"}, {}, {"cached_input_tokens": 1},
                       LIMITS, NOW, timestamp=NOW) is None  # fmt: skip
