"""Fold a provider's stream events into the usage object of the whole call (pure).

A streamed call reports its usage in pieces: OpenAI Chat in one extra chunk (or, on
some compatible providers, cumulatively in every chunk), Anthropic in
`message_start` and then cumulatively in `message_delta`, Gemini cumulatively in every
chunk, the OpenAI Responses API, Ollama, Bedrock and Cohere once near the end. `StreamFolder`
takes the decoded events one at a time, as they arrive, and keeps the usage object the
provider would have returned for the same call without streaming, so
`events.normalise_usage` maps both the same way.

Cumulative reports are merged, never summed: a later non-null field overrides an
earlier one and nested objects are merged key by key, so repeating a total is
harmless and a field sent only once (Anthropic's cache reads in `message_start`)
survives the events that follow it. Folding never raises on what a provider sends:
unknown events and keys are ignored, and the keys of a usage object are kept as sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

STREAM_FORMATS: tuple[str, ...] = (
    "openai_chat",
    "openai_responses",
    "anthropic",
    "gemini",
    "ollama",
    "bedrock",
    "cohere",
)

# The Responses API ends every stream with exactly one of these; each carries the whole
# response object, usage included.
_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

# OpenAI Chat Completions' end-of-stream marker: an SSE data line that is not JSON.
_DONE = "[DONE]"
_DONE_BYTES = _DONE.encode()


def _plain(value: Any) -> Any:
    """A deep copy in plain dicts and lists, so callers never share our state."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Merge a later usage report into an earlier one: non-null values win, maps merge.

    A null never erases a value seen earlier, but is kept as sent when it is all we have
    (OpenRouter's `cost_details.upstream_inference_cost: null`).
    """
    for key, value in update.items():
        if value is None:
            into.setdefault(key, None)
            continue
        if isinstance(value, Mapping):
            current = into.get(key)
            if not isinstance(current, dict):
                current = into[key] = {}
            _merge(current, value)
        else:
            into[key] = _plain(value)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class StreamFolder:
    """Fold a provider's stream events, one at a time, into the usage object of the whole call."""

    __slots__ = (
        "chunks",
        "_fmt",
        "_usage",
        "_model",
        "_response_id",
        "_finished",
        "_saw_stop",
        "_add",
    )

    def __init__(self, fmt: str) -> None:
        if fmt not in STREAM_FORMATS:
            raise ValueError(
                f"unknown stream format {fmt!r}; expected one of {', '.join(STREAM_FORMATS)}"
            )
        self._fmt = fmt
        self.chunks = 0
        self._usage: dict[str, Any] | None = None
        self._model: str | None = None
        self._response_id: str | None = None
        self._finished = False
        self._saw_stop = False
        adders: dict[str, Callable[[Mapping[str, Any]], None]] = {
            "openai_chat": self._add_openai_chat,
            "openai_responses": self._add_openai_responses,
            "anthropic": self._add_anthropic,
            "gemini": self._add_gemini,
            "ollama": self._add_ollama,
            "bedrock": self._add_bedrock,
            "cohere": self._add_cohere,
        }
        self._add = adders[fmt]

    # ------------------------------------------------------------ public

    @property
    def fmt(self) -> str:
        return self._fmt

    @property
    def usage(self) -> dict[str, Any] | None:
        """The provider-shaped usage object seen so far, or None before any usage."""
        return None if self._usage is None else _plain(self._usage)

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def response_id(self) -> str | None:
        return self._response_id

    @property
    def finished(self) -> bool:
        """True once the provider's end-of-stream marker or its final usage was seen."""
        return self._finished

    def add(self, event: Mapping[str, Any] | object) -> None:
        """Fold one decoded stream event (the JSON of one SSE `data:` line, or one Bedrock
        event dict); events without usage only count, and nothing a provider sends raises.

        A pydantic model from a provider SDK (openai, anthropic, google-genai, ollama) is
        accepted too and dumped as its JSON would read; passing the dict is faster.
        """
        self.chunks += 1
        if isinstance(event, Mapping):
            self._add(event)
            return
        dump = getattr(event, "model_dump", None)
        if callable(dump):
            try:
                data = dump(mode="json", by_alias=True, exclude_unset=True)
            except Exception:  # a foreign object's failure must not break the caller's stream
                return
            if isinstance(data, Mapping):
                self._add(data)

    def add_data(self, data: str | bytes) -> Any:
        """Decode one SSE `data:` payload, fold it, and return it (None if not JSON).

        OpenAI Chat's `[DONE]` marker ends the stream; it counts as a chunk but is not an
        event, so None is returned for it too.
        """
        if isinstance(data, str):
            done = data.strip() == _DONE
        else:
            data = bytes(data)
            done = data.strip() == _DONE_BYTES
        if done:
            self.chunks += 1
            self._finished = True
            return None
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.chunks += 1
            return None
        self.add(event)
        return event

    def is_usage_only(self, event: Mapping[str, Any]) -> bool:
        """True for the extra OpenAI Chat chunk `stream_options.include_usage` adds: empty
        `choices` and a `usage`. A caller who did not ask for usage should not see it."""
        if self._fmt != "openai_chat" or not isinstance(event, Mapping):
            return False
        choices = event.get("choices")
        return isinstance(choices, list) and not choices and isinstance(event.get("usage"), Mapping)

    # ------------------------------------------------------------ internals

    def _fold(self, usage: object) -> bool:
        if not isinstance(usage, Mapping):
            return False
        if self._usage is None:
            self._usage = {}
        _merge(self._usage, usage)
        return True

    def _note(self, model: object = None, response_id: object = None) -> None:
        if (m := _text(model)) is not None:
            self._model = m
        if (r := _text(response_id)) is not None:
            self._response_id = r

    def _add_openai_chat(self, event: Mapping[str, Any]) -> None:
        self._note(event.get("model"), event.get("id"))
        choices = event.get("choices")
        if isinstance(choices, list) and any(
            isinstance(c, Mapping) and c.get("finish_reason") for c in choices
        ):
            self._saw_stop = True
        got = self._fold(event.get("usage"))
        groq = event.get("x_groq")
        if isinstance(groq, Mapping):
            # Groq reports usage in its own extension, on the chunk that ends the choices.
            got = self._fold(groq.get("usage")) or got
        # Usage after (or with) the finish reason is the final report: OpenAI's extra
        # chunk has no choices, OpenRouter's has one empty choice, Groq's and DeepSeek's
        # ride on the finishing chunk.
        if got and (self._saw_stop or choices == []):
            self._finished = True

    def _add_openai_responses(self, event: Mapping[str, Any]) -> None:
        response = event.get("response")
        if isinstance(response, Mapping):
            self._note(response.get("model"), response.get("id"))
            self._fold(response.get("usage"))
        kind = event.get("type")
        if isinstance(kind, str) and kind in _RESPONSES_TERMINAL:
            self._finished = True

    def _add_anthropic(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        message = event.get("message")
        if isinstance(message, Mapping):
            self._note(message.get("model"), message.get("id"))
            self._fold(message.get("usage"))
        # message_delta's usage is cumulative and, in newer API versions, repeats the
        # input and cache counts; merging keeps whichever fields it leaves out.
        self._fold(event.get("usage"))
        if kind == "message_stop":
            self._finished = True

    def _add_gemini(self, event: Mapping[str, Any]) -> None:
        self._note(
            event.get("modelVersion") or event.get("model_version"),
            event.get("responseId") or event.get("response_id"),
        )
        got = self._fold(event.get("usageMetadata") or event.get("usage_metadata"))
        candidates = event.get("candidates")
        if got and isinstance(candidates, list):
            if any(
                isinstance(c, Mapping) and (c.get("finishReason") or c.get("finish_reason"))
                for c in candidates
            ):
                self._finished = True

    def _add_ollama(self, event: Mapping[str, Any]) -> None:
        self._note(event.get("model"))
        if event.get("done") is not True:
            return
        counts = {
            k: v
            for k, v in event.items()
            if isinstance(k, str) and k.endswith(("_count", "_duration"))
        }
        if counts:
            self._fold(counts)
        self._finished = True

    def _add_bedrock(self, event: Mapping[str, Any]) -> None:
        metadata = event.get("metadata")
        if isinstance(metadata, Mapping):
            self._fold(metadata.get("usage"))
            # The metadata event is the last one ConverseStream sends.
            self._finished = True

    def _add_cohere(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message-start":
            self._note(response_id=event.get("id"))
        elif kind == "message-end":
            delta = event.get("delta")
            if isinstance(delta, Mapping):
                self._fold(delta.get("usage"))
            self._finished = True


def fold_stream(fmt: str, events: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The usage object of a whole stream of decoded events, or None if it reported none."""
    folder = StreamFolder(fmt)
    for event in events:
        folder.add(event)
    return folder.usage
