"""Usage from the events of an OpenAI-style stream (pure).

Interim: the shared stream folding (`shapes.streams.StreamFolder`) replaces this once
it lands; the gateway uses only the part of its API kept here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StreamFolder:
    """Folds one stream's decoded events into its usage object and model."""

    def __init__(self, fmt: str) -> None:
        if fmt not in ("openai_chat", "openai_responses"):
            raise ValueError(f"unknown stream format {fmt!r}; use openai_chat or openai_responses")
        self.fmt = fmt
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.finished = False
        self.chunks = 0

    def add(self, event: Mapping[str, Any]) -> None:
        self.chunks += 1
        if self.fmt == "openai_chat":
            body: Mapping[str, Any] = event
            usage = event.get("usage")
            if any(
                c.get("finish_reason") for c in event.get("choices") or () if isinstance(c, dict)
            ):
                self.finished = True
        else:
            inner = event.get("response")
            body = inner if isinstance(inner, Mapping) else {}
            usage = body.get("usage")
            if event.get("type") in (
                "response.completed",
                "response.incomplete",
                "response.failed",
            ):
                self.finished = True
        if isinstance(usage, Mapping):
            self.usage = dict(usage)
        model = body.get("model")
        if isinstance(model, str) and model:
            self.model = model
        rid = body.get("id")
        if isinstance(rid, str) and self.response_id is None:
            self.response_id = rid

    @staticmethod
    def is_usage_only(event: Mapping[str, Any]) -> bool:
        """An OpenAI chat chunk that only carries the usage asked for by include_usage."""
        return event.get("choices") == [] and isinstance(event.get("usage"), Mapping)
