"""A local fake LLM provider for the SDK tests: OpenAI, Groq, Anthropic, Ollama routes.

It replays response bodies and streams in each provider's documented shape. Their
usage numbers come from recorded responses:

- OpenAI chat with cached input: the Prompt Caching guide's example response
  (prompt_tokens 2006, cached_tokens 1920, completion_tokens 300), platform.openai.com.
- OpenAI reasoning: the reasoning guide's example usage (reasoning_tokens 1024 of 1186).
- OpenAI streams end with the include_usage chunk (empty `choices`), sent only when
  the request asks for it, as documented for `stream_options.include_usage`.
- Anthropic stream: a captured claude-sonnet-4-5 stream, message_start and
  message_delta usage (input 8, cache_creation 10426, output 2 then 501), in
  vpaturel/claude-wrapper-secure SSE_EVENTS_DOCUMENTATION.md.
- Groq: the usage object and `x_groq.usage` of its chat-completions reference.
- Gemini: generateContent's usageMetadata with thoughtsTokenCount beside the
  candidates, as in the Gemini API's thinking guide.
- Ollama: the /api/chat example of ollama's docs/api.md (prompt_eval_count 26,
  eval_count 298).

A model name ending in ``:429``, ``:500``, ``:slow`` (answers after 3 s) or ``:cut``
(a stream that stops after two chunks without finishing) makes that call fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# Apart from every usage above, so a test can tell a counted prompt from a call.
ANTHROPIC_COUNT_TOKENS = 2095
# The answer to a structured-output request (a JSON schema asked for): parse() helpers
# validate it into the caller's type.
STRUCTURED_TEXT = '{"greeting": "Hello there"}'
OPENAI_CHAT_USAGE: dict[str, Any] = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
OPENAI_REASONING_USAGE: dict[str, Any] = {
    "prompt_tokens": 75,
    "completion_tokens": 1186,
    "total_tokens": 1261,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 1024, "audio_tokens": 0},
}
OPENAI_STREAM_USAGE: dict[str, Any] = {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}
RESPONSES_USAGE: dict[str, Any] = {
    "input_tokens": 36,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 87,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 123,
}
EMBEDDING_USAGE: dict[str, Any] = {"prompt_tokens": 8, "total_tokens": 8}
ANTHROPIC_USAGE: dict[str, Any] = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 10426,
    "output_tokens": 48,
    "service_tier": "standard",
}
ANTHROPIC_START_USAGE: dict[str, Any] = {
    "input_tokens": 8,
    "cache_creation_input_tokens": 10426,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 10426, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 2,
    "service_tier": "standard",
}
ANTHROPIC_DELTA_USAGE: dict[str, Any] = {
    "input_tokens": 8,
    "cache_creation_input_tokens": 10426,
    "cache_read_input_tokens": 0,
    "output_tokens": 501,
}
GROQ_USAGE: dict[str, Any] = {
    "queue_time": 0.037493756,
    "prompt_tokens": 18,
    "prompt_time": 0.000680594,
    "completion_tokens": 556,
    "completion_time": 0.463333333,
    "total_tokens": 574,
    "total_time": 0.464013927,
}
OLLAMA_COUNTS: dict[str, Any] = {
    "total_duration": 5191566416,
    "load_duration": 2154458,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 383809000,
    "eval_count": 298,
    "eval_duration": 4799921000,
}


def _fault(model: str) -> str | None:
    _, sep, fault = model.rpartition(":")
    return fault if sep and fault in ("429", "500", "slow", "cut") else None


async def _error_or_none(fault: str | None, kind: str) -> Response | None:
    if fault == "429":
        body: dict[str, Any] = (
            {"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited"}}
            if kind == "anthropic"
            else {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            }
        )
        return JSONResponse(body, status_code=429, headers={"retry-after": "0"})
    if fault == "500":
        return JSONResponse({"error": {"message": "server error", "type": "server_error"}}, 500)
    if fault == "slow":
        await asyncio.sleep(3.0)
    return None


def _sse(
    events: list[tuple[str | None, dict[str, Any]]], cut: bool, done: bool
) -> StreamingResponse:
    async def gen() -> AsyncIterator[bytes]:
        for i, (name, data) in enumerate(events):
            if cut and i == 2:
                # The connection drops mid-stream: no terminating chunk is sent.
                raise ConnectionResetError("upstream went away")
            head = f"event: {name}\n".encode() if name else b""
            yield head + b"data: " + orjson.dumps(data) + b"\n\n"
            await asyncio.sleep(0)
        if done:
            yield b"data: [DONE]\n\n"

    return StreamingResponse(gen(), media_type="text/event-stream")


def _chunk(
    model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1730000000,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


async def openai_chat(request: Request) -> Response:
    body = await request.json()
    model = body["model"]
    fault = _fault(model)
    groq = request.url.path.startswith("/openai/")
    error = await _error_or_none(fault, "openai")
    if error is not None:
        return error
    if body.get("stream"):
        events: list[tuple[str | None, dict[str, Any]]] = [
            (None, _chunk(model, {"role": "assistant", "content": ""})),
            (None, _chunk(model, {"content": "Hello"})),
            (None, _chunk(model, {"content": " there"})),
            (None, _chunk(model, {}, "stop")),
        ]
        if groq:
            events[-1][1]["x_groq"] = {"id": "req_fake", "usage": GROQ_USAGE}
        elif (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                (None, {**_chunk(model, {}), "choices": [], "usage": OPENAI_STREAM_USAGE})
            )
        return _sse(events, fault == "cut", True)
    wants_json = (body.get("response_format") or {}).get("type") == "json_schema"
    text = STRUCTURED_TEXT if wants_json else "Hello there"
    usage = (
        GROQ_USAGE
        if groq
        else OPENAI_REASONING_USAGE
        if model.startswith("o")
        else OPENAI_CHAT_USAGE
    )
    return JSONResponse(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1730000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "system_fingerprint": "fp_fake",
        }
    )


def _response_object(
    model: str, status: str, usage: dict[str, Any] | None, text: str = "Hello there"
) -> dict[str, Any]:
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": 1730000000,
        "status": status,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_fake",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
        if status == "completed"
        else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


async def openai_responses(request: Request) -> Response:
    body = await request.json()
    model = body["model"]
    fault = _fault(model)
    error = await _error_or_none(fault, "openai")
    if error is not None:
        return error
    if body.get("stream"):
        events: list[tuple[str | None, dict[str, Any]]] = [
            ("response.created", {"type": "response.created",
                                   "response": _response_object(model, "in_progress", None)}),
            # The item and its part open before their deltas, as the stream() helper
            # requires.
            ("response.output_item.added", {"type": "response.output_item.added",
                                            "output_index": 0,
                                            "item": {"type": "message", "id": "msg_fake",
                                                     "status": "in_progress",
                                                     "role": "assistant", "content": []}}),
            ("response.content_part.added", {"type": "response.content_part.added",
                                             "item_id": "msg_fake", "output_index": 0,
                                             "content_index": 0,
                                             "part": {"type": "output_text", "text": "",
                                                      "annotations": []}}),
            ("response.output_text.delta", {"type": "response.output_text.delta",
                                            "item_id": "msg_fake", "output_index": 0,
                                            "content_index": 0, "delta": "Hello", "logprobs": []}),
            ("response.output_text.delta", {"type": "response.output_text.delta",
                                            "item_id": "msg_fake", "output_index": 0,
                                            "content_index": 0, "delta": " there", "logprobs": []}),
            ("response.completed", {"type": "response.completed",
                                    "response": _response_object(model, "completed", RESPONSES_USAGE)}),
        ]  # fmt: skip
        for number, (_, data) in enumerate(events):
            data["sequence_number"] = number
        return _sse(events, fault == "cut", False)
    wants_json = ((body.get("text") or {}).get("format") or {}).get("type") == "json_schema"
    text = STRUCTURED_TEXT if wants_json else "Hello there"
    return JSONResponse(_response_object(model, "completed", RESPONSES_USAGE, text))


async def openai_embeddings(request: Request) -> Response:
    body = await request.json()
    error = await _error_or_none(_fault(body["model"]), "openai")
    if error is not None:
        return error
    return JSONResponse(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093, 0.0158]}],
            "model": body["model"],
            "usage": EMBEDDING_USAGE,
        }
    )


async def anthropic_messages(request: Request) -> Response:
    body = await request.json()
    model = body["model"]
    fault = _fault(model)
    error = await _error_or_none(fault, "anthropic")
    if error is not None:
        return error
    if body.get("stream"):
        message = {
            "id": "msg_fake", "type": "message", "role": "assistant", "content": [],
            "model": model, "stop_reason": None, "stop_sequence": None,
            "usage": ANTHROPIC_START_USAGE,
        }  # fmt: skip
        events: list[tuple[str | None, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": message}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "Hello"}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": " there"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": ANTHROPIC_DELTA_USAGE}),
            ("message_stop", {"type": "message_stop"}),
        ]  # fmt: skip
        return _sse(events, fault == "cut", False)
    wants_json = body.get("output_format") or (body.get("output_config") or {}).get("format")
    text = STRUCTURED_TEXT if wants_json else "Hello there"
    return JSONResponse(
        {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": ANTHROPIC_USAGE,
        }
    )


async def ollama_route(request: Request) -> Response:
    body = await request.json()
    model = body["model"]
    fault = _fault(model)
    error = await _error_or_none(fault, "ollama")
    if error is not None:
        return error
    path = request.url.path
    if path == "/api/embed":
        return JSONResponse(
            {"model": model, "embeddings": [[0.01, -0.02]], "total_duration": 14143917,
             "load_duration": 1019500, "prompt_eval_count": 8}
        )  # fmt: skip
    key = "message" if path == "/api/chat" else "response"

    def part(text: str) -> Any:
        return {"role": "assistant", "content": text} if key == "message" else text

    final = {"model": model, "created_at": "2023-12-12T14:13:43.416799Z", key: part(""),
             "done": True, "done_reason": "stop", **OLLAMA_COUNTS}  # fmt: skip
    if body.get("stream", True):

        async def gen() -> AsyncIterator[bytes]:
            for i, text in enumerate(("Hello", " there")):
                if fault == "cut" and i == 1:
                    raise ConnectionResetError("upstream went away")
                yield orjson.dumps({"model": model, "created_at": "2023-12-12T14:13:43Z",
                                    key: part(text), "done": False}) + b"\n"  # fmt: skip
            yield orjson.dumps(final) + b"\n"

        return StreamingResponse(gen(), media_type="application/x-ndjson")
    final[key] = part("Hello there")
    return JSONResponse(final)


GEMINI_USAGE: dict[str, Any] = {
    "promptTokenCount": 9,
    "candidatesTokenCount": 12,
    "totalTokenCount": 61,
    "thoughtsTokenCount": 40,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}],
}


def _gemini_response(model: str, text: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
        "modelVersion": model,
        "responseId": "resp-fake",
    }
    if usage is not None:
        out["usageMetadata"] = usage
    return out


async def gemini_route(request: Request) -> Response:
    model, _, method = request.path_params["rest"].partition(":")
    fault = _fault(model)
    if fault == "429":
        return JSONResponse(
            {
                "error": {
                    "code": 429,
                    "message": "Resource exhausted",
                    "status": "RESOURCE_EXHAUSTED",
                }
            },
            429,
        )
    await request.body()
    if method == "streamGenerateContent":
        partial = {"promptTokenCount": 9, "totalTokenCount": 9}
        events: list[tuple[str | None, dict[str, Any]]] = [
            (None, _gemini_response(model, "Hello", partial)),
            (None, _gemini_response(model, " there", GEMINI_USAGE)),
        ]
        return _sse(events, fault == "cut", False)
    return JSONResponse(_gemini_response(model, "Hello there", GEMINI_USAGE))


async def anthropic_count_tokens(request: Request) -> Response:
    # The documented response of POST /v1/messages/count_tokens: one field.
    await request.json()
    return JSONResponse({"input_tokens": ANTHROPIC_COUNT_TOKENS})


def fake_provider_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", openai_chat, methods=["POST"]),
            Route("/openai/v1/chat/completions", openai_chat, methods=["POST"]),
            Route("/v1/responses", openai_responses, methods=["POST"]),
            Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
            Route("/v1/messages", anthropic_messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", anthropic_count_tokens, methods=["POST"]),
            Route("/api/chat", ollama_route, methods=["POST"]),
            Route("/api/generate", ollama_route, methods=["POST"]),
            Route("/api/embed", ollama_route, methods=["POST"]),
            Route("/v1beta/models/{rest:path}", gemini_route, methods=["POST"]),
            Route("/v1/models/{rest:path}", gemini_route, methods=["POST"]),
        ]
    )
