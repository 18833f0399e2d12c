"""Server-sent events framed as raw byte blocks, so a relay can drop one and keep the rest exact.

A block is everything up to and including the blank line that ends an event
(``\\n\\n``, ``\\r\\n\\r\\n`` or ``\\r\\r``). The bytes of every block are kept as
received; only `data_of` looks inside, with the package's one SSE parser
(`core.shapes.sse.SSEParser`), not a second one.
"""

from __future__ import annotations

import re

from ai_usage_exporter.core.shapes.sse import parse_sse

_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SSEFramer:
    """Cuts a byte stream into whole event blocks; keeps the incomplete tail for later."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        blocks: list[bytes] = []
        start = 0
        for m in _END.finditer(buf):
            blocks.append(buf[start : m.end()])
            start = m.end()
        self._buf = buf[start:]
        return blocks

    def tail(self) -> bytes:
        """What arrived after the last complete event (an unterminated one, if any)."""
        rest, self._buf = self._buf, b""
        return rest


def data_of(block: bytes) -> str | None:
    """The event's data (its `data` lines joined by newlines), or None when it has none."""
    events = parse_sse(block)
    return events[0][1] if events else None
