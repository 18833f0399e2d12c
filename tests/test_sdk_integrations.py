"""instrument() with the real openai, anthropic, groq and ollama packages against a
local fake provider; events recorded in process, checked row by row in the ledger."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _fake_provider import (
    ANTHROPIC_USAGE,
    GROQ_USAGE,
    OLLAMA_COUNTS,
    OPENAI_CHAT_USAGE,
    OPENAI_STREAM_USAGE,
)
from _sdk import fake_provider, in_process
from ai_usage_exporter import Recorder, flush, instrument, usage_context

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
groq = pytest.importorskip("groq")
ollama = pytest.importorskip("ollama")

MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with fake_provider() as url:
        yield url


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    with in_process(tmp_path) as r:
        yield r


_clients: list[Any] = []


def keep(client: Any) -> Any:
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    # A dropped client keeps its sockets open until collected; close them now.
    while _clients:
        c = _clients.pop()
        c._client.close() if isinstance(c, ollama.Client) else c.close()


def rows(recorder: Recorder) -> list[dict[str, Any]]:
    assert flush(10)
    # In the order the calls ended: the ledger groups a batch's rows by the columns
    # they fill, so its ids need not follow the calls.
    return sorted(recorder.ledger.events(), key=lambda r: r["ts"])


def tokens(row: dict[str, Any]) -> dict[str, int]:
    return {
        k: row[k]
        for k in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                  "reasoning_tokens")
    }  # fmt: skip


def oai(provider: str, **kw: Any) -> Any:
    return keep(openai.OpenAI(base_url=f"{provider}/v1", api_key="sk-test", max_retries=0, **kw))


# ---------------------------------------------------------------- openai


def test_openai_chat_records_usage_and_returns_the_response(
    provider: str, recorder: Recorder
) -> None:
    client = instrument(oai(provider), service="checkout", agent="default-agent")
    with usage_context(agent="planner", task="greet"):
        response = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert type(response).__name__ == "ChatCompletion"
    assert response.usage is not None and response.usage.prompt_tokens == 2006
    (row,) = rows(recorder)
    assert (row["provider"], row["model"], row["operation"], row["status"]) == (
        "openai", "gpt-4o", "chat", "ok",
    )  # fmt: skip
    assert (row["service"], row["agent"], row["task"]) == ("checkout", "planner", "greet")
    assert tokens(row) == {
        "input_tokens": 2006,
        "output_tokens": 300,
        "cached_input_tokens": 1920,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert row["duration_ms"] > 0 and row["ttft_ms"] is None


def test_openai_reasoning_tokens(provider: str, recorder: Recorder) -> None:
    client = instrument(oai(provider))
    client.chat.completions.create(model="o3-mini", messages=MESSAGES)
    (row,) = rows(recorder)
    assert (row["output_tokens"], row["reasoning_tokens"]) == (1186, 1024)


def test_openai_stream_asks_for_usage_and_hides_the_usage_chunk(
    provider: str, recorder: Recorder
) -> None:
    client = instrument(oai(provider))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert type(stream).__name__ == "Stream"
    chunks = list(stream)
    # Four content chunks; the usage-only chunk the caller did not ask for is hidden.
    assert len(chunks) == 4 and all(c.choices for c in chunks)
    (row,) = rows(recorder)
    assert (row["input_tokens"], row["output_tokens"]) == (
        OPENAI_STREAM_USAGE["prompt_tokens"], OPENAI_STREAM_USAGE["completion_tokens"],
    )  # fmt: skip
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["duration_ms"]
    assert row["status"] == "ok" and row["error_type"] is None


def test_openai_stream_keeps_the_usage_chunk_for_a_caller_who_asked(
    provider: str, recorder: Recorder
) -> None:
    client = instrument(oai(provider))
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True},
    ) as stream:  # fmt: skip
        chunks = list(stream)
    assert len(chunks) == 5 and chunks[-1].choices == [] and chunks[-1].usage is not None
    (row,) = rows(recorder)
    assert row["input_tokens"] == 19


def test_openai_stream_abandoned_after_two_chunks_is_recorded_once(
    provider: str, recorder: Recorder
) -> None:
    client = instrument(oai(provider))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    for i, _chunk in enumerate(stream):
        if i == 1:
            break
    del stream, _chunk
    gc.collect()
    (row,) = rows(recorder)
    assert (row["status"], row["level"], row["error_type"]) == ("ok", "warn", "cancelled")
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0)  # usage comes last
    assert row["model"] == "gpt-4o-mini"


def test_openai_stream_closed_by_with_block_is_recorded_once(
    provider: str, recorder: Recorder
) -> None:
    client = instrument(oai(provider))
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as stream:
        next(iter(stream))
    gc.collect()
    (row,) = rows(recorder)
    assert row["error_type"] == "cancelled"


def test_openai_stream_cut_midway_is_an_error(provider: str, recorder: Recorder) -> None:
    client = instrument(oai(provider))
    stream = client.chat.completions.create(model="gpt-4o-mini:cut", messages=MESSAGES, stream=True)
    seen = []
    with pytest.raises(Exception) as info:
        for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 2
    (row,) = rows(recorder)
    assert (row["status"], row["level"]) == ("error", "error")
    assert row["error_type"] == "connection", info.value


@pytest.mark.parametrize(
    ("model", "error_type", "exc_name"),
    [
        ("gpt-4o:429", "rate_limit", "RateLimitError"),
        ("gpt-4o:500", "server", "InternalServerError"),
        ("gpt-4o:slow", "timeout", "APITimeoutError"),
    ],
)
def test_openai_errors_are_recorded_and_reraised_unchanged(
    provider: str, recorder: Recorder, model: str, error_type: str, exc_name: str
) -> None:
    client = instrument(oai(provider, timeout=0.5))
    with pytest.raises(openai.APIError) as info:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert type(info.value).__name__ == exc_name
    (row,) = rows(recorder)
    assert (row["status"], row["error_type"], row["level"], row["model"]) == (
        "error", error_type, "error", model,
    )  # fmt: skip


def test_openai_responses_and_embeddings(provider: str, recorder: Recorder) -> None:
    client = instrument(oai(provider))
    client.responses.create(model="gpt-4.1", input="hi")
    events = list(client.responses.create(model="gpt-4.1", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    plain, streamed, embedded = rows(recorder)
    assert (plain["input_tokens"], plain["output_tokens"]) == (36, 87)
    assert (streamed["input_tokens"], streamed["output_tokens"]) == (36, 87)
    assert streamed["ttft_ms"] is not None
    assert (embedded["operation"], embedded["input_tokens"], embedded["output_tokens"]) == (
        "embedding", 8, 0,
    )  # fmt: skip


def test_async_openai_plain_and_stream(provider: str, recorder: Recorder) -> None:
    async def run() -> None:
        client = instrument(
            openai.AsyncOpenAI(base_url=f"{provider}/v1", api_key="sk-test", max_retries=0)
        )
        with usage_context(agent="async-agent"):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            async for _ in stream:
                pass
        await client.close()

    asyncio.run(run())
    plain, streamed = rows(recorder)
    assert plain["input_tokens"] == OPENAI_CHAT_USAGE["prompt_tokens"]
    assert streamed["input_tokens"] == OPENAI_STREAM_USAGE["prompt_tokens"]
    assert plain["agent"] == streamed["agent"] == "async-agent"


# ---------------------------------------------------------------- anthropic


def ant(provider: str) -> Any:
    return keep(anthropic.Anthropic(base_url=provider, api_key="sk-ant-test", max_retries=0))


def test_anthropic_message_adds_cache_counts_to_input(provider: str, recorder: Recorder) -> None:
    client = instrument(ant(provider))
    msg = client.messages.create(model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES)
    assert type(msg).__name__ == "Message"
    (row,) = rows(recorder)
    u = ANTHROPIC_USAGE
    assert tokens(row) == {
        "input_tokens": u["input_tokens"] + u["cache_read_input_tokens"],
        "output_tokens": u["output_tokens"],
        "cached_input_tokens": u["cache_read_input_tokens"],
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }


def test_anthropic_stream_takes_the_final_output_count(provider: str, recorder: Recorder) -> None:
    client = instrument(ant(provider))
    events = list(
        client.messages.create(
            model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES, stream=True
        )
    )
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    with client.messages.stream(
        model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "Hello there"
    a, b = rows(recorder)
    for row in (a, b):
        assert tokens(row) == {
            "input_tokens": 8 + 10426,
            "output_tokens": 501,
            "cached_input_tokens": 0,
            "cache_write_tokens": 10426,
            "reasoning_tokens": 0,
        }
        assert row["ttft_ms"] is not None


def test_anthropic_rate_limit(provider: str, recorder: Recorder) -> None:
    client = instrument(ant(provider))
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="claude-sonnet-4-7:429", max_tokens=8, messages=MESSAGES)
    (row,) = rows(recorder)
    assert (row["status"], row["error_type"]) == ("error", "rate_limit")


# ---------------------------------------------------------------- groq, ollama


def test_groq_plain_and_stream(provider: str, recorder: Recorder) -> None:
    client = instrument(keep(groq.Groq(base_url=provider, api_key="gsk-test", max_retries=0)))
    client.chat.completions.create(model="llama3-70b-8192", messages=MESSAGES)
    chunks = list(
        client.chat.completions.create(model="llama3-70b-8192", messages=MESSAGES, stream=True)
    )
    assert len(chunks) == 4
    plain, streamed = rows(recorder)
    for row in (plain, streamed):
        assert (row["provider"], row["input_tokens"], row["output_tokens"]) == (
            "groq", GROQ_USAGE["prompt_tokens"], GROQ_USAGE["completion_tokens"],
        )  # fmt: skip


def test_ollama_chat_generate_embed_and_stream(provider: str, recorder: Recorder) -> None:
    client = instrument(keep(ollama.Client(host=provider)))
    client.chat(model="llama3.2", messages=MESSAGES)
    parts = list(client.chat(model="llama3.2", messages=MESSAGES, stream=True))
    assert parts[-1].done
    client.generate("llama3.2", "hi")
    client.embed(model="nomic-embed-text", input="hi")
    chat, streamed, generated, embedded = rows(recorder)
    for row in (chat, streamed, generated):
        assert (row["provider"], row["input_tokens"], row["output_tokens"]) == (
            "ollama", OLLAMA_COUNTS["prompt_eval_count"], OLLAMA_COUNTS["eval_count"],
        )  # fmt: skip
    assert (generated["operation"], generated["model"]) == ("completion", "llama3.2")
    assert (embedded["operation"], embedded["input_tokens"]) == ("embedding", 8)


def test_ollama_error(provider: str, recorder: Recorder) -> None:
    client = instrument(keep(ollama.Client(host=provider)))
    with pytest.raises(ollama.ResponseError):
        client.chat(model="llama3.2:500", messages=MESSAGES)
    (row,) = rows(recorder)
    assert (row["status"], row["error_type"]) == ("error", "server")


# ---------------------------------------------------------------- google-genai


def test_google_genai_plain_and_stream(provider: str, recorder: Recorder) -> None:
    genai = pytest.importorskip("google.genai")
    client = instrument(
        genai.Client(api_key="k", http_options=genai.types.HttpOptions(base_url=provider))
    )
    response = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert response.text == "Hello there"
    parts = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    assert len(parts) == 2
    plain, streamed = rows(recorder)
    for row in (plain, streamed):
        assert (row["provider"], row["model"]) == ("google", "gemini-2.5-flash")
        # Thoughts are output tokens the candidates count leaves out.
        assert tokens(row) == {
            "input_tokens": 9,
            "output_tokens": 12 + 40,
            "cached_input_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 40,
        }
    assert streamed["ttft_ms"] is not None


def test_async_anthropic_stream_abandoned_is_recorded_once(
    provider: str, recorder: Recorder
) -> None:
    async def run() -> None:
        client = anthropic.AsyncAnthropic(base_url=provider, api_key="k", max_retries=0)
        instrument(client)
        stream = await client.messages.create(
            model="claude-sonnet-4-7", max_tokens=64, messages=MESSAGES, stream=True
        )
        async for event in stream:
            if event.type == "content_block_start":
                break
        await stream.close()
        await client.close()

    asyncio.run(run())
    (row,) = rows(recorder)
    # message_start was seen: its input counts are kept, the final output count never came.
    assert (row["error_type"], row["input_tokens"], row["output_tokens"]) == (
        "cancelled",
        8 + 10426,
        2,
    )


def test_anthropic_stream_cut_midway_keeps_what_was_seen(provider: str, recorder: Recorder) -> None:
    client = instrument(ant(provider))
    stream = client.messages.create(
        model="claude-sonnet-4-7:cut", max_tokens=64, messages=MESSAGES, stream=True
    )
    seen = []
    with pytest.raises(Exception):  # noqa: B017 - whatever the transport raises, re-raised as is
        for event in stream:
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start"]
    (row,) = rows(recorder)
    assert (row["status"], row["error_type"]) == ("error", "connection")
    # message_start's counts were seen before the cut and are kept.
    assert (row["input_tokens"], row["output_tokens"]) == (8 + 10426, 2)
