"""What every integration shares: wrapping a method, and watching a stream.

A wrapped method checks budgets, times the call, records it (or its exception, then
re-raises it unchanged) and returns the SDK's own object. A stream keeps its type:
only its iterator is replaced by one that watches the chunks go by, so the caller's
`isinstance`, `with` and `.response` all still work.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from ai_usage_exporter.sdk.core import check_budgets, record_call

Attr = Mapping[str, Any]
# (state, chunk) -> whether the caller sees the chunk
OnChunk = Callable[["StreamState", Any], bool]


class StreamState:
    """What one stream has shown so far; recorded exactly once when it ends."""

    __slots__ = (
        "provider", "operation", "attr", "t0", "model", "usage", "usage_delta", "ttft_ms",
        "chunks", "done", "hide_usage", "extra",
    )  # fmt: skip

    def __init__(
        self, provider: str, operation: str, attr: Attr, t0: float, model: Any, hide_usage: bool
    ) -> None:
        self.provider = provider
        self.operation = operation
        self.attr = attr
        self.t0 = t0
        self.model = model
        self.usage: Any = None
        self.usage_delta: Any = None
        self.ttft_ms: float | None = None
        self.chunks = 0
        self.done = False
        self.hide_usage = hide_usage
        self.extra: dict[str, Any] | None = None

    def first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.t0) * 1000.0

    def finish(self, exc: BaseException | None = None, abandoned: bool = False) -> None:
        if self.done:
            return
        self.done = True
        extra = self.extra
        if abandoned and exc is None:
            # The caller stopped reading: the call is counted with what was seen, and
            # marked, since its final usage (sent last) may never have arrived.
            extra = {**(extra or {}), "level": "warn", "error_type": "cancelled"}
        record_call(
            self.provider,
            self.operation,
            self.model,
            self.attr,
            self.t0,
            usage=self.usage,
            usage_delta=self.usage_delta,
            exc=exc,
            ttft_ms=self.ttft_ms,
            extra=extra,
        )


def _watch(it: Iterator[Any], state: StreamState, on_chunk: OnChunk) -> Iterator[Any]:
    try:
        for chunk in it:
            state.chunks += 1
            if on_chunk(state, chunk):
                yield chunk
    except GeneratorExit:
        state.finish(abandoned=True)
        close = getattr(it, "close", None)
        if close is not None:
            close()
        raise
    except BaseException as exc:
        state.finish(exc=exc)
        raise
    state.finish()


async def _awatch(
    it: AsyncIterator[Any], state: StreamState, on_chunk: OnChunk
) -> AsyncIterator[Any]:
    try:
        async for chunk in it:
            state.chunks += 1
            if on_chunk(state, chunk):
                yield chunk
    except GeneratorExit:
        state.finish(abandoned=True)
        raise
    except BaseException as exc:
        state.finish(exc=exc)
        raise
    state.finish()


def watch_stream(stream: Any, state: StreamState, on_chunk: OnChunk) -> Any:
    """Make a Stainless SDK stream (openai, anthropic, groq) report itself; return it."""
    d = stream.__dict__
    inner = stream._iterator
    is_async = hasattr(inner, "__anext__")
    d["_iterator"] = _awatch(inner, state, on_chunk) if is_async else _watch(inner, state, on_chunk)
    close = stream.close
    if is_async:

        async def aclose() -> None:
            state.finish(abandoned=True)
            await close()

        d["close"] = aclose
    else:

        def sclose() -> None:
            state.finish(abandoned=True)
            close()

        d["close"] = sclose
    return stream


def watch_iterator(it: Iterator[Any], state: StreamState, on_chunk: OnChunk) -> Iterator[Any]:
    """A plain generator stream (ollama, google-genai) as a watched generator."""
    return _watch(it, state, on_chunk)


def watch_aiterator(
    it: AsyncIterator[Any], state: StreamState, on_chunk: OnChunk
) -> AsyncIterator[Any]:
    return _awatch(it, state, on_chunk)


def wrap_method(
    owner: Any,
    name: str,
    call: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any],
    is_async: bool,
) -> None:
    """Replace `owner.name` on this instance only with `call(original, args, kwargs)`."""
    original = getattr(owner, name, None)
    if original is None or getattr(original, "_ai_usage_wrapped", False):
        return
    if is_async:

        @functools.wraps(original)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            return await call(original, args, kwargs)

        awrapper._ai_usage_wrapped = True  # type: ignore[attr-defined]
        setattr(owner, name, awrapper)
    else:

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return call(original, args, kwargs)

        wrapper._ai_usage_wrapped = True  # type: ignore[attr-defined]
        setattr(owner, name, wrapper)


def sync_call(
    provider: str,
    operation: str,
    attr: Attr,
    original: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    on_response: Callable[[Any, float], None],
    on_stream: Callable[[Any, float], Any] | None = None,
    model: Any = None,
) -> Any:
    """Run one SDK call: budgets, timing, error recording; the response is returned as is."""
    check_budgets(attr)
    t0 = time.perf_counter()
    try:
        response = original(*args, **kwargs)
    except BaseException as exc:
        record_call(provider, operation, model or kwargs.get("model"), attr, t0, exc=exc)
        raise
    if on_stream is not None and kwargs.get("stream") is True:
        return on_stream(response, t0)
    on_response(response, t0)
    return response


async def async_call(
    provider: str,
    operation: str,
    attr: Attr,
    original: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    on_response: Callable[[Any, float], None],
    on_stream: Callable[[Any, float], Any] | None = None,
    model: Any = None,
) -> Any:
    check_budgets(attr)
    t0 = time.perf_counter()
    try:
        response = await original(*args, **kwargs)
    except BaseException as exc:
        record_call(provider, operation, model or kwargs.get("model"), attr, t0, exc=exc)
        raise
    if on_stream is not None and kwargs.get("stream") is True:
        return on_stream(response, t0)
    on_response(response, t0)
    return response
