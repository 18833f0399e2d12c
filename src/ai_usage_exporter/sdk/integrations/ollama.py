"""The `ollama` SDK (Client and AsyncClient): chat, generate, embed.

Ollama reports `prompt_eval_count` and `eval_count` on the response, or on the last
(`done`) chunk of a stream; a prompt served from Ollama's cache may omit
`prompt_eval_count`, which then counts as 0.
"""

from __future__ import annotations

from typing import Any

from ai_usage_exporter.sdk.integrations._common import (
    Attr,
    StreamState,
    async_call,
    sync_call,
    watch_aiterator,
    watch_iterator,
    wrap_method,
)
from ai_usage_exporter.sdk.track import OPERATION_CHAT, OPERATION_COMPLETION, OPERATION_EMBEDDING

PROVIDER = "ollama"


def _counts(r: Any) -> dict[str, int]:
    return {
        "prompt_eval_count": getattr(r, "prompt_eval_count", None) or 0,
        "eval_count": getattr(r, "eval_count", None) or 0,
    }


def _chunk(state: StreamState, chunk: Any) -> bool:
    if state.ttft_ms is None:
        state.first_token()
    if getattr(chunk, "done", False):
        state.usage = _counts(chunk)
        state.model = getattr(chunk, "model", None) or state.model
    return True


def _model(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return kwargs.get("model") or (args[0] if args else None)


def instrument_client(client: Any, attr: Attr) -> Any:
    import ollama

    is_async = isinstance(client, ollama.AsyncClient)
    run = async_call if is_async else sync_call
    watch = watch_aiterator if is_async else watch_iterator

    def make(operation: str) -> Any:
        def call(original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            from ai_usage_exporter.sdk.core import record_call

            model = _model(args, kwargs)

            def done(response: Any, t0: float) -> None:
                record_call(
                    PROVIDER,
                    operation,
                    getattr(response, "model", None) or model,
                    attr,
                    t0,
                    usage=_counts(response),
                )

            def on_stream(it: Any, t0: float) -> Any:
                return watch(it, StreamState(PROVIDER, operation, attr, t0, model, False), _chunk)

            return run(
                PROVIDER, operation, attr, original, args, kwargs, done, on_stream, model=model
            )

        return call

    wrap_method(client, "chat", make(OPERATION_CHAT), is_async)
    wrap_method(client, "generate", make(OPERATION_COMPLETION), is_async)
    wrap_method(client, "embed", make(OPERATION_EMBEDDING), is_async)
    return client
