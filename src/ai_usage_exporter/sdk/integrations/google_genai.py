"""The `google-genai` SDK: models.generate_content, generate_content_stream, embed_content.

Usage arrives as `usage_metadata` on the response and, in a stream, on the chunks
(the last one holds the totals); it is sent in Gemini's own camelCase shape.
"""

from __future__ import annotations

import time
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
from ai_usage_exporter.sdk.track import OPERATION_CHAT, OPERATION_EMBEDDING

PROVIDER = "google"


def _chunk(state: StreamState, chunk: Any) -> bool:
    if state.ttft_ms is None:
        state.first_token()
    usage = getattr(chunk, "usage_metadata", None)
    if usage is not None:
        state.usage = usage
    version = getattr(chunk, "model_version", None)
    if version:
        state.model = version
    return True


def instrument_client(client: Any, attr: Attr) -> Any:
    from ai_usage_exporter.sdk.core import check_budgets, record_call

    for models, is_async in ((client.models, False), (client.aio.models, True)):
        run = async_call if is_async else sync_call

        def generate(
            original: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _run: Any = run
        ) -> Any:
            def done(response: Any, t0: float) -> None:
                record_call(
                    PROVIDER,
                    OPERATION_CHAT,
                    getattr(response, "model_version", None) or kwargs.get("model"),
                    attr,
                    t0,
                    usage=getattr(response, "usage_metadata", None),
                )

            return _run(PROVIDER, OPERATION_CHAT, attr, original, args, kwargs, done)

        def embed(
            original: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _run: Any = run
        ) -> Any:
            def done(response: Any, t0: float) -> None:
                # Gemini's embedding response carries no token count (Vertex AI's has
                # one per embedding in `statistics`); the call is counted without tokens.
                record_call(PROVIDER, OPERATION_EMBEDDING, kwargs.get("model"), attr, t0)

            return _run(PROVIDER, OPERATION_EMBEDDING, attr, original, args, kwargs, done)

        wrap_method(models, "generate_content", generate, is_async)
        wrap_method(models, "embed_content", embed, is_async)

        original_stream = getattr(models, "generate_content_stream", None)
        if original_stream is None:
            continue
        if is_async:

            async def astream(*args: Any, _orig: Any = original_stream, **kwargs: Any) -> Any:
                check_budgets(attr)
                t0 = time.perf_counter()
                try:
                    it = await _orig(*args, **kwargs)
                except BaseException as exc:
                    record_call(PROVIDER, OPERATION_CHAT, kwargs.get("model"), attr, t0, exc=exc)
                    raise
                state = StreamState(PROVIDER, OPERATION_CHAT, attr, t0, kwargs.get("model"), False)
                return watch_aiterator(it, state, _chunk)

            models.generate_content_stream = astream
        else:

            def sstream(*args: Any, _orig: Any = original_stream, **kwargs: Any) -> Any:
                check_budgets(attr)
                t0 = time.perf_counter()
                try:
                    it = _orig(*args, **kwargs)
                except BaseException as exc:
                    record_call(PROVIDER, OPERATION_CHAT, kwargs.get("model"), attr, t0, exc=exc)
                    raise
                state = StreamState(PROVIDER, OPERATION_CHAT, attr, t0, kwargs.get("model"), False)
                return watch_iterator(it, state, _chunk)

            models.generate_content_stream = sstream
    return client
