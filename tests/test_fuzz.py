"""Generated inputs: schemathesis against the served OpenAPI document, and hypothesis
properties of event parsing, provider usage mapping and label escaping."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from schemathesis.specs.openapi.checks import positive_data_acceptance

from _server import ServerProcess, exposition_samples, server_process
from ai_usage_exporter.core.events.model import DEFAULT_LIMITS
from ai_usage_exporter.core.events.parse import parse_event
from ai_usage_exporter.core.events.usage import normalise_usage
from ai_usage_exporter.core.shapes import TOKEN_FIELDS, USAGE_FIELDS
from ai_usage_exporter.recorder.recorder import Recorder

# ---------------------------------------------------------------- schemathesis


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("fuzz") / "ledger.db") as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(served: ServerProcess) -> Any:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    schema.config.update(base_url=served.url)
    schema.config.generation.update(max_examples=25, deterministic=True)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any) -> None:
    # Schema-valid events may still be refused: JSON Schema cannot say that cached tokens
    # are part of input, that a timestamp lies within 400 days of now, or that only one
    # of usage/usageMetadata/response may be given. Every other check runs.
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500


# ---------------------------------------------------------------- parse_event

NOW = 1_790_000_000.0
count = st.integers(min_value=0, max_value=DEFAULT_LIMITS.max_tokens)


@st.composite
def flat_counts(draw: st.DrawFn) -> dict[str, int]:
    """Seven counts satisfying the subset rules (input includes cached and cache-write,
    output includes reasoning and audio output)."""
    cached = draw(st.integers(0, 10**6))
    cache_write = draw(st.integers(0, 10**6))
    audio_in = draw(st.integers(0, 10**6))
    inp = draw(st.integers(max(cached + cache_write, audio_in), 5 * 10**6))
    reasoning = draw(st.integers(0, 10**6))
    audio_out = draw(st.integers(0, 10**6))
    out = draw(st.integers(reasoning + audio_out, 5 * 10**6))
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cached_input_tokens": cached,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
        "audio_input_tokens": audio_in,
        "audio_output_tokens": audio_out,
    }


@given(
    counts=flat_counts(),
    omit=st.sets(st.sampled_from(TOKEN_FIELDS)),
    duration=st.none() | st.floats(0, DEFAULT_LIMITS.max_duration_ms),
)
def test_valid_flat_events_keep_their_counts(
    counts: dict[str, int], omit: set[str], duration: float | None
) -> None:
    # An omitted field counts as zero, so only zero-valued ones may be left out.
    sent = {k: v for k, v in counts.items() if k not in omit or v != 0}
    event: dict[str, Any] = {"provider": "openai", "model": "m", **sent}
    if duration is not None:
        event["duration_ms"] = duration
    [parsed] = parse_event(event, now=NOW)
    got = {f: getattr(parsed, f) for f in TOKEN_FIELDS}
    assert got == {f: sent.get(f, 0) for f in TOKEN_FIELDS}
    assert parsed.total_tokens == got["input_tokens"] + got["output_tokens"]
    assert got["cached_input_tokens"] + got["cache_write_tokens"] <= got["input_tokens"]
    assert got["audio_input_tokens"] <= got["input_tokens"]
    assert got["reasoning_tokens"] + got["audio_output_tokens"] <= got["output_tokens"]
    assert parsed.duration_ms == duration


# ---------------------------------------------------------------- provider shapes

small = st.integers(0, 10**6)


@st.composite
def provider_usage(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, int]]:
    """A usage object in one provider's own shape, and the counts it must normalise to."""
    shape = draw(
        st.sampled_from(
            ("openai_chat", "openai_responses", "anthropic", "gemini", "bedrock", "ollama")
        )
    )
    zero = dict.fromkeys(USAGE_FIELDS, 0)
    if shape == "openai_chat":
        cached, audio_in, reasoning, audio_out = (draw(small) for _ in range(4))
        prompt = draw(st.integers(max(cached, audio_in), 5 * 10**6))
        completion = draw(st.integers(reasoning + audio_out, 5 * 10**6))
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": audio_in},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": audio_out,
                "accepted_prediction_tokens": draw(small),
            },
        }
        expected = {
            **zero,
            "input_tokens": prompt,
            "output_tokens": completion,
            "cached_input_tokens": cached,
            "audio_input_tokens": audio_in,
            "reasoning_tokens": reasoning,
            "audio_output_tokens": audio_out,
        }
    elif shape == "openai_responses":
        cached, reasoning = draw(small), draw(small)
        inp = draw(st.integers(cached, 5 * 10**6))
        out = draw(st.integers(reasoning, 5 * 10**6))
        usage = {
            "input_tokens": inp,
            "output_tokens": out,
            "total_tokens": inp + out,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens_details": {"reasoning_tokens": reasoning},
        }
        expected = {
            **zero,
            "input_tokens": inp,
            "output_tokens": out,
            "cached_input_tokens": cached,
            "reasoning_tokens": reasoning,
        }
    elif shape in ("anthropic", "bedrock"):
        fresh, read, write, out = (draw(small) for _ in range(4))
        names = (
            (
                "input_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
                "output_tokens",
            )
            if shape == "anthropic"
            else ("inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens", "outputTokens")
        )
        usage = dict(zip(names, (fresh, read, write, out), strict=True))
        if shape == "bedrock":
            usage["totalTokens"] = fresh + read + write + out
        else:
            # Anthropic reports the cache counts as well as requiring at least one present.
            usage["service_tier"] = "standard"
        expected = {
            **zero,
            "input_tokens": fresh + read + write,
            "output_tokens": out,
            "cached_input_tokens": read,
            "cache_write_tokens": write,
        }
    elif shape == "gemini":
        cached, thoughts, candidates, tool = (draw(small) for _ in range(4))
        audio_in, audio_out = draw(small), draw(st.integers(0, 1000))
        prompt = draw(st.integers(max(cached, audio_in), 5 * 10**6))
        candidates = max(candidates, audio_out)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "thoughtsTokenCount": thoughts,
            "toolUsePromptTokenCount": tool,
            "cachedContentTokenCount": cached,
            "totalTokenCount": prompt + candidates + thoughts + tool,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": prompt - audio_in},
                {"modality": "AUDIO", "tokenCount": audio_in},
            ],
            "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": audio_out}],
        }
        expected = {
            **zero,
            "input_tokens": prompt + tool,
            "output_tokens": candidates + thoughts,
            "cached_input_tokens": cached,
            "reasoning_tokens": thoughts,
            "audio_input_tokens": audio_in,
            "audio_output_tokens": audio_out,
        }
    else:
        prompt, ev = draw(small), draw(small)
        usage = {"prompt_eval_count": prompt, "eval_count": ev, "total_duration": draw(small)}
        expected = {**zero, "input_tokens": prompt, "output_tokens": ev}
    return shape, usage, expected


@given(provider_usage())
def test_provider_usage_normalises_to_the_expected_counts(
    case: tuple[str, dict[str, Any], dict[str, int]],
) -> None:
    shape, usage, expected = case
    assert normalise_usage(usage) == expected
    [event] = parse_event({"provider": shape, "model": "m", "usage": usage}, now=NOW)
    assert {f: getattr(event, f) for f in USAGE_FIELDS} == expected


# ---------------------------------------------------------------- label escaping

label_text = st.text(
    # No surrogates (not UTF-8) and no control characters (Cc): validation refuses them.
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")),
    min_size=1,
    max_size=DEFAULT_LIMITS.max_label_length,
)


def test_label_values_round_trip_through_the_exposition() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "ledger.db")
        caps = {"model": 100_000}
        with Recorder(db, CollectorRegistry(), label_caps=caps, synchronous="normal") as rec:
            seen: set[str] = set()

            @given(model=label_text)
            @settings(max_examples=100, deadline=None)
            def check(model: str) -> None:
                rec.record_many([{"provider": "p", "model": model, "input_tokens": 1}])
                seen.add(model)
                samples = exposition_samples(rec.exposition().decode())
                labels = {"type": "input", "service": "default", "provider": "p", "model": model}
                key = frozenset(labels.items())
                assert ("ai_tokens_total", key) in samples
                models = {dict(k[1])["model"] for k in samples if k[0] == "ai_tokens_total"}
                assert models == seen

            check()
