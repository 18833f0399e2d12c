"""instrument() and the SDKs' helper methods: parse(), the stream() helpers, client.beta,
count_tokens and with_options()/copy() clients, with the real openai and anthropic
packages against the local fake provider; each call must be recorded exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

from _fake_provider import (
    ANTHROPIC_COUNT_TOKENS,
    ANTHROPIC_USAGE,
    OPENAI_CHAT_USAGE,
    OPENAI_STREAM_USAGE,
    RESPONSES_USAGE,
)
from _sdk import fake_provider, in_process
from ai_usage_exporter import Recorder, flush, instrument, usage_context

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

MESSAGES = [{"role": "user", "content": "Say hello"}]
CHAT = (OPENAI_CHAT_USAGE["prompt_tokens"], OPENAI_CHAT_USAGE["completion_tokens"])
CHAT_STREAM = (OPENAI_STREAM_USAGE["prompt_tokens"], OPENAI_STREAM_USAGE["completion_tokens"])
RESPONSES = (RESPONSES_USAGE["input_tokens"], RESPONSES_USAGE["output_tokens"])
CLAUDE = (
    ANTHROPIC_USAGE["input_tokens"] + ANTHROPIC_USAGE["cache_read_input_tokens"],
    ANTHROPIC_USAGE["output_tokens"],
)
CLAUDE_STREAM = (8 + 10426, 501)  # the fake's message_start + message_delta usage


class Greeting(pydantic.BaseModel):
    greeting: str


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with fake_provider() as url:
        yield url


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    with in_process(tmp_path) as r:
        yield r


def rows(recorder: Recorder) -> list[dict[str, Any]]:
    assert flush(10)
    return sorted(recorder.ledger.events(), key=lambda r: r["ts"])


def seen(recorder: Recorder) -> list[tuple[str, str, str, int, int]]:
    """Each recorded call as (provider, model, status, input tokens, output tokens)."""
    return [
        (r["provider"], r["model"], r["status"], r["input_tokens"], r["output_tokens"])
        for r in rows(recorder)
    ]


def oai(provider: str) -> Any:
    return openai.OpenAI(base_url=f"{provider}/v1", api_key="sk-test", max_retries=0)


def ant(provider: str) -> Any:
    return anthropic.Anthropic(base_url=provider, api_key="sk-ant-test", max_retries=0)


# ---------------------------------------------------------------- openai


def test_openai_parse_helpers_are_recorded_once(provider: str, recorder: Recorder) -> None:
    with oai(provider) as bare:
        client = instrument(bare)
        completion = client.chat.completions.parse(
            model="gpt-4o", messages=MESSAGES, response_format=Greeting
        )
        assert type(completion).__name__.startswith("ParsedChatCompletion")
        assert completion.choices[0].message.parsed == Greeting(greeting="Hello there")
        response = client.responses.parse(model="gpt-4.1", input="hi", text_format=Greeting)
        assert response.output_parsed == Greeting(greeting="Hello there")
        beta = client.beta.chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=Greeting
        )
        assert beta.choices[0].message.parsed == Greeting(greeting="Hello there")
    assert seen(recorder) == [
        ("openai", "gpt-4o", "ok", *CHAT),
        ("openai", "gpt-4.1", "ok", *RESPONSES),
        ("openai", "gpt-4o-mini", "ok", *CHAT),
    ]
    assert {r["operation"] for r in rows(recorder)} == {"chat"}


def test_openai_parse_error_is_recorded_and_reraised(provider: str, recorder: Recorder) -> None:
    with oai(provider) as bare:
        client = instrument(bare)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.parse(
                model="gpt-4o:429", messages=MESSAGES, response_format=Greeting
            )
    (row,) = rows(recorder)
    assert (row["status"], row["error_type"], row["level"]) == ("error", "rate_limit", "error")


def test_openai_stream_helpers_are_recorded_once(provider: str, recorder: Recorder) -> None:
    with oai(provider) as bare:
        client = instrument(bare)
        with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_completion()
        assert "content.done" in kinds and final.choices[0].message.content == "Hello there"
        # The usage chunk was asked for by the instrumentation, not the caller: hidden.
        assert final.usage is None
        with client.beta.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
            stream.until_done()
        with client.responses.stream(model="gpt-4.1", input="hi") as rstream:
            text = "".join(e.delta for e in rstream if e.type == "response.output_text.delta")
            assert rstream.get_final_response().usage is not None
        assert text == "Hello there"
    assert seen(recorder) == [
        ("openai", "gpt-4o-mini", "ok", *CHAT_STREAM),
        ("openai", "gpt-4o", "ok", *CHAT_STREAM),
        ("openai", "gpt-4.1", "ok", *RESPONSES),
    ]
    assert all(r["ttft_ms"] is not None for r in rows(recorder))


def test_openai_beta_resources(provider: str, recorder: Recorder) -> None:
    with oai(provider) as bare:
        client = instrument(bare)
        client.beta.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        list(client.beta.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
        client.beta.responses.create(model="gpt-4.1", input="hi")
    assert seen(recorder) == [
        ("openai", "gpt-4o", "ok", *CHAT),
        ("openai", "gpt-4o", "ok", *CHAT_STREAM),
        ("openai", "gpt-4.1", "ok", *RESPONSES),
    ]


def test_openai_with_options_and_copy_keep_the_attribution(
    provider: str, recorder: Recorder
) -> None:
    with oai(provider) as bare:
        client = instrument(bare, service="checkout", agent="default-agent")
        fast = client.with_options(timeout=5.0)
        assert fast is not client and type(fast) is type(client)
        assert instrument(fast) is fast  # already instrumented: not wrapped twice
        fast.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with usage_context(agent="planner"):
            client.copy(max_retries=0).with_options(timeout=4.0).responses.create(
                model="gpt-4.1", input="hi"
            )
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [(r["model"], r["service"], r["agent"]) for r in rows(recorder)] == [
        ("gpt-4o", "checkout", "default-agent"),
        ("gpt-4.1", "checkout", "planner"),
        ("gpt-4o-mini", "checkout", "default-agent"),
    ]


def test_async_openai_helpers(provider: str, recorder: Recorder) -> None:
    async def run() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{provider}/v1", api_key="sk-test", max_retries=0
        ) as bare:
            client = instrument(bare, service="async-svc")
            await client.chat.completions.parse(
                model="gpt-4o", messages=MESSAGES, response_format=Greeting
            )
            await client.responses.parse(model="gpt-4.1", input="hi", text_format=Greeting)
            async with client.chat.completions.stream(
                model="gpt-4o-mini", messages=MESSAGES
            ) as stream:
                async for _ in stream:
                    pass
            async with client.responses.stream(model="gpt-4.1", input="hi") as rstream:
                await rstream.until_done()
            await client.with_options(timeout=5.0).beta.chat.completions.parse(
                model="gpt-4o", messages=MESSAGES, response_format=Greeting
            )
            with pytest.raises(openai.InternalServerError):
                await client.responses.parse(model="gpt-4.1:500", input="hi")

    asyncio.run(run())
    assert seen(recorder) == [
        ("openai", "gpt-4o", "ok", *CHAT),
        ("openai", "gpt-4.1", "ok", *RESPONSES),
        ("openai", "gpt-4o-mini", "ok", *CHAT_STREAM),
        ("openai", "gpt-4.1", "ok", *RESPONSES),
        ("openai", "gpt-4o", "ok", *CHAT),
        ("openai", "gpt-4.1:500", "error", 0, 0),
    ]
    assert {r["service"] for r in rows(recorder)} == {"async-svc"}


# ---------------------------------------------------------------- anthropic


def test_anthropic_count_tokens_is_not_recorded(provider: str, recorder: Recorder) -> None:
    with ant(provider) as bare:
        client = instrument(bare)
        counted = client.messages.count_tokens(model="claude-sonnet-4-7", messages=MESSAGES)
        beta_counted = client.beta.messages.count_tokens(
            model="claude-sonnet-4-7", messages=MESSAGES
        )
        assert counted.input_tokens == beta_counted.input_tokens == ANTHROPIC_COUNT_TOKENS
        client.messages.create(model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES)
    # Only the real call: a token count is a forecast, not usage.
    assert seen(recorder) == [("anthropic", "claude-sonnet-4-7", "ok", *CLAUDE)]


def test_anthropic_parse_beta_and_stream_are_recorded_once(
    provider: str, recorder: Recorder
) -> None:
    with ant(provider) as bare:
        client = instrument(bare)
        parsed = client.messages.parse(
            model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES, output_format=Greeting
        )
        assert parsed.parsed_output == Greeting(greeting="Hello there")
        client.beta.messages.create(model="claude-opus-4-1", max_tokens=64, messages=MESSAGES)
        events = list(
            client.beta.messages.create(
                model="claude-opus-4-1", max_tokens=64, messages=MESSAGES, stream=True
            )
        )
        assert events[-1].type == "message_stop"
        with client.beta.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES
        ) as stream:
            assert "".join(stream.text_stream) == "Hello there"
        with pytest.raises(anthropic.RateLimitError):
            client.beta.messages.parse(
                model="claude-opus-4-1:429", max_tokens=64, messages=MESSAGES
            )
    assert seen(recorder) == [
        ("anthropic", "claude-sonnet-4-7", "ok", *CLAUDE),
        ("anthropic", "claude-opus-4-1", "ok", *CLAUDE),
        ("anthropic", "claude-opus-4-1", "ok", *CLAUDE_STREAM),
        ("anthropic", "claude-haiku-4-5", "ok", *CLAUDE_STREAM),
        ("anthropic", "claude-opus-4-1:429", "error", 0, 0),
    ]


def test_anthropic_with_options_keeps_the_attribution(provider: str, recorder: Recorder) -> None:
    with ant(provider) as bare:
        client = instrument(bare, tenant="acme")
        client.with_options(timeout=5.0).messages.create(
            model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES
        )
        with client.copy().messages.stream(
            model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES
        ) as stream:
            stream.until_done()
    assert [(r["tenant"], r["input_tokens"]) for r in rows(recorder)] == [
        ("acme", CLAUDE[0]),
        ("acme", CLAUDE_STREAM[0]),
    ]


def test_async_anthropic_helpers(provider: str, recorder: Recorder) -> None:
    async def run() -> None:
        async with anthropic.AsyncAnthropic(
            base_url=provider, api_key="sk-ant-test", max_retries=0
        ) as bare:
            client = instrument(bare)
            copy = client.with_options(timeout=5.0)
            await copy.messages.parse(
                model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES, output_format=Greeting
            )
            await copy.messages.count_tokens(model="claude-sonnet-4-7", messages=MESSAGES)
            await client.beta.messages.create(
                model="claude-opus-4-1", max_tokens=64, messages=MESSAGES
            )
            async with client.beta.messages.stream(
                model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES
            ) as stream:
                await stream.until_done()

    asyncio.run(run())
    assert seen(recorder) == [
        ("anthropic", "claude-sonnet-4-7", "ok", *CLAUDE),
        ("anthropic", "claude-opus-4-1", "ok", *CLAUDE),
        ("anthropic", "claude-haiku-4-5", "ok", *CLAUDE_STREAM),
    ]
