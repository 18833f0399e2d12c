"""The official `openai` SDK (sync and async): chat completions, Responses, embeddings,
their `parse()` and `stream()` helpers, and the same under `client.beta`.

Streams of chat completions carry usage only when asked with
``stream_options={"include_usage": True}``; it is asked for when the caller did not,
and the extra usage-only chunk (empty `choices`) is then kept from the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ai_usage_exporter.sdk.integrations._common import (
    Attr,
    StreamState,
    async_call,
    sync_call,
    watch_stream,
    wrap_method,
)
from ai_usage_exporter.sdk.track import OPERATION_CHAT, OPERATION_COMPLETION, OPERATION_EMBEDDING

PROVIDER = "openai"


def _response_done(provider: str, operation: str, attr: Attr) -> Any:
    from ai_usage_exporter.sdk.core import record_call

    def done(response: Any, t0: float) -> None:
        record_call(
            provider,
            operation,
            getattr(response, "model", None),
            attr,
            t0,
            usage=getattr(response, "usage", None),
        )

    return done


def _chat_chunk(state: StreamState, chunk: Any) -> bool:
    if state.model is None or state.chunks == 1:
        state.model = getattr(chunk, "model", None) or state.model
    usage = getattr(chunk, "usage", None)
    choices = getattr(chunk, "choices", None)
    if usage is not None:
        state.usage = usage
        if state.hide_usage and not choices:
            return False
    else:
        # Groq sends its usage in the last chunk's x_groq extension.
        x = getattr(chunk, "x_groq", None)
        if x is not None and getattr(x, "usage", None) is not None:
            state.usage = x.usage
    if choices and state.ttft_ms is None:
        state.first_token()
    return True


def _responses_event(state: StreamState, event: Any) -> bool:
    response = getattr(event, "response", None)
    if response is not None:
        state.model = getattr(response, "model", None) or state.model
        usage = getattr(response, "usage", None)
        if usage is not None:
            state.usage = usage
    elif state.ttft_ms is None and getattr(event, "type", "").endswith(".delta"):
        state.first_token()
    return True


def _ask_for_usage(kwargs: dict[str, Any]) -> bool:
    """Add include_usage to a streamed chat request; True if the caller had not asked."""
    if kwargs.get("stream") is not True:
        return False
    options = kwargs.get("stream_options")
    if isinstance(options, dict):
        if options.get("include_usage"):
            return False
        kwargs["stream_options"] = {**options, "include_usage": True}
        return True
    if options is None or type(options).__name__ in ("NotGiven", "Omit"):
        kwargs["stream_options"] = {"include_usage": True}
        return True
    return False


def instrument_methods(
    client: Any, attr: Attr, provider: str, is_async: bool, *, ask_usage: bool = True
) -> None:
    """Wrap chat.completions, completions, embeddings and responses of one client."""
    run = async_call if is_async else sync_call

    def chat_like(operation: str) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]:
        """Chat and legacy completions: the same call, stream and usage chunk, two names."""

        def call(original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            hide = _ask_for_usage(kwargs) if ask_usage else False

            def on_stream(stream: Any, t0: float) -> Any:
                state = StreamState(provider, operation, attr, t0, kwargs.get("model"), hide)
                return watch_stream(stream, state, _chat_chunk)

            return run(
                provider, operation, attr, original, args, kwargs,
                _response_done(provider, operation, attr), on_stream,
            )  # fmt: skip

        return call

    chat = chat_like(OPERATION_CHAT)
    completion = chat_like(OPERATION_COMPLETION)

    def embedding(original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run(
            provider, OPERATION_EMBEDDING, attr, original, args, kwargs,
            _response_done(provider, OPERATION_EMBEDDING, attr),
        )  # fmt: skip

    def responses(original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        def on_stream(stream: Any, t0: float) -> Any:
            state = StreamState(provider, OPERATION_CHAT, attr, t0, kwargs.get("model"), False)
            return watch_stream(stream, state, _responses_event)

        return run(
            provider, OPERATION_CHAT, attr, original, args, kwargs,
            _response_done(provider, OPERATION_CHAT, attr), on_stream,
        )  # fmt: skip

    # parse() (structured outputs) posts on its own rather than through create(), so
    # it is wrapped too; the stream() helpers call the instance's create() and are
    # recorded through it. client.beta.chat is a second Chat object with its own
    # completions resource.
    beta = getattr(client, "beta", None)
    for chat_owner in (client, beta):
        chat_resource = getattr(getattr(chat_owner, "chat", None), "completions", None)
        if chat_resource is not None:
            wrap_method(chat_resource, "create", chat, is_async)
            wrap_method(chat_resource, "parse", chat, is_async)
    for attr_name, call in (("completions", completion), ("embeddings", embedding)):
        resource = getattr(client, attr_name, None)
        if resource is not None:
            wrap_method(resource, "create", call, is_async)
    for responses_owner in (client, beta):
        responses_resource = getattr(responses_owner, "responses", None)
        if responses_resource is not None:
            wrap_method(responses_resource, "create", responses, is_async)
            wrap_method(responses_resource, "parse", responses, is_async)


def instrument_client(client: Any, attr: Attr) -> Any:
    import openai

    is_async = isinstance(client, openai.AsyncOpenAI)
    # Azure deployments are priced and named apart from OpenAI's own API.
    provider = "azure" if type(client).__name__.endswith("AzureOpenAI") else PROVIDER
    instrument_methods(client, attr, provider, is_async)
    return client
