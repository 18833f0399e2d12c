"""The `anthropic` SDK (sync and async): messages.create (plain and streamed),
messages.parse() and messages.stream(), and the same under `client.beta.messages`.

A stream's usage comes in two parts: `message_start` carries the input and cache
counts, `message_delta` the final output count (and, in newer API versions, the input
counts again); the later values win key by key.
"""

from __future__ import annotations

from typing import Any

from ai_usage_exporter.sdk.integrations._common import (
    Attr,
    StreamState,
    async_call,
    sync_call,
    watch_stream,
    wrap_method,
)
from ai_usage_exporter.sdk.track import OPERATION_CHAT

PROVIDER = "anthropic"


def _event(state: StreamState, event: Any) -> bool:
    kind = getattr(event, "type", None)
    if kind == "message_start":
        message = event.message
        state.model = getattr(message, "model", None) or state.model
        state.usage = getattr(message, "usage", None)
    elif kind == "message_delta":
        usage = getattr(event, "usage", None)
        if usage is not None:
            if state.usage is None:
                state.usage = usage
            else:
                state.usage_delta = usage
    elif kind == "content_block_delta" and state.ttft_ms is None:
        state.first_token()
    return True


def _done(attr: Attr) -> Any:
    from ai_usage_exporter.sdk.core import record_call

    def done(response: Any, t0: float) -> None:
        record_call(
            PROVIDER,
            OPERATION_CHAT,
            getattr(response, "model", None),
            attr,
            t0,
            usage=getattr(response, "usage", None),
        )

    return done


def instrument_client(client: Any, attr: Attr) -> Any:
    import anthropic

    is_async = isinstance(client, anthropic.AsyncAnthropic)
    _instrument_messages(client.messages, attr, is_async)
    beta_messages = getattr(getattr(client, "beta", None), "messages", None)
    if beta_messages is not None:
        _instrument_messages(beta_messages, attr, is_async)
    return client


def _instrument_messages(messages: Any, attr: Attr, is_async: bool) -> None:
    """Wrap create, parse and stream of one messages resource (plain or beta).

    count_tokens is left alone on purpose: it sends no prompt to a model and bills
    nothing, and its `input_tokens` is a forecast, so recording it would count the
    same prompt twice once the real call is made.
    """
    run = async_call if is_async else sync_call

    def create(original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        def on_stream(stream: Any, t0: float) -> Any:
            state = StreamState(PROVIDER, OPERATION_CHAT, attr, t0, kwargs.get("model"), False)
            return watch_stream(stream, state, _event)

        return run(PROVIDER, OPERATION_CHAT, attr, original, args, kwargs, _done(attr), on_stream)

    wrap_method(messages, "create", create, is_async)
    # parse() (structured outputs) posts on its own rather than through create().
    wrap_method(messages, "parse", create, is_async)

    original_stream = getattr(messages, "stream", None)
    if original_stream is not None and not getattr(original_stream, "_ai_usage_wrapped", False):

        def stream(*args: Any, **kwargs: Any) -> Any:
            from ai_usage_exporter.sdk.core import check_budgets

            check_budgets(attr)
            manager = original_stream(*args, **kwargs)
            _watch_manager(manager, kwargs.get("model"), attr, is_async)
            return manager

        stream._ai_usage_wrapped = True  # type: ignore[attr-defined]
        messages.stream = stream


def _watch_manager(manager: Any, model: Any, attr: Attr, is_async: bool) -> None:
    """Watch the raw event stream a MessageStreamManager opens when entered."""
    import time

    from ai_usage_exporter.sdk.core import record_call

    cls = type(manager).__name__  # MessageStreamManager or AsyncMessageStreamManager
    slot = f"_{cls}__api_request"
    request = manager.__dict__.get(slot)
    if request is None:
        return
    if is_async:

        async def opened() -> Any:
            t0 = time.perf_counter()
            try:
                raw = await request
            except BaseException as exc:
                record_call(PROVIDER, OPERATION_CHAT, model, attr, t0, exc=exc)
                raise
            state = StreamState(PROVIDER, OPERATION_CHAT, attr, t0, model, False)
            return watch_stream(raw, state, _event)

        manager.__dict__[slot] = opened()
    else:

        def open_sync() -> Any:
            t0 = time.perf_counter()
            try:
                raw = request()
            except BaseException as exc:
                record_call(PROVIDER, OPERATION_CHAT, model, attr, t0, exc=exc)
                raise
            state = StreamState(PROVIDER, OPERATION_CHAT, attr, t0, model, False)
            return watch_stream(raw, state, _event)

        manager.__dict__[slot] = open_sync
