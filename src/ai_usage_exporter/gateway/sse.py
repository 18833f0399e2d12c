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

    @staticmethod
    def data(block: bytes) -> str | None:
        return data_of(block)


def data_of(block: bytes) -> str | None:
    """The event's data (its `data` lines joined by newlines), or None when it has none."""
    # The shapes providers send, `data: X` alone or after one `event: name` line, ended
    # by LF LF: read without the general parser, with the same answer (every other
    # shape, CR anywhere, a BOM, comments, several data lines, takes the parser).
    if block[-2:] == b"\n\n" and b"\r" not in block:
        if block[:6] == b"data: ":
            line = block[6:-2]
            if b"\n" not in line:
                return line.decode("utf-8", "replace")
        elif block[:6] == b"event:":
            nl = block.find(b"\n")
            if block[nl + 1 : nl + 7] == b"data: ":
                line = block[nl + 7 : -2]
                if b"\n" not in line:
                    return line.decode("utf-8", "replace")
    events = parse_sse(block)
    return events[0][1] if events else None
