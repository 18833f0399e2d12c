"""A streamed JSON array cut into its elements as they arrive (Gemini's streamGenerateContent
without ``alt=sse``: ``[{...}\\r\\n,{...}\\r\\n]``, one response object per element).

Only the array's structure is tracked (depth, strings, escapes), so an element is
handed on as soon as its closing brace arrives; its bytes are kept as received.
"""

from __future__ import annotations

import re

_SPECIAL = re.compile(rb'[\[\]{}"\\]')


class JSONArrayFramer:
    """Cuts a byte stream holding one JSON array into its top-level elements."""

    __slots__ = ("_buf", "_depth", "_in_string", "_escape", "_start")

    def __init__(self) -> None:
        self._buf = b""
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._start: int | None = None  # where the current element began in _buf

    def feed(self, chunk: bytes) -> list[bytes]:
        scanned = len(self._buf)
        buf = self._buf + chunk
        out: list[bytes] = []
        pos = scanned
        while True:
            if self._escape:
                if pos >= len(buf):
                    break
                # The byte after a backslash never ends a string.
                self._escape = False
                pos += 1
            m = _SPECIAL.search(buf, pos)
            if m is None:
                break
            c = buf[m.start() : m.start() + 1]
            pos = m.end()
            if self._in_string:
                if c == b"\\":
                    self._escape = True
                elif c == b'"':
                    self._in_string = False
                continue
            if c == b'"':
                self._in_string = True
            elif c in b"[{":
                if self._depth == 1 and self._start is None:
                    self._start = m.start()
                self._depth += 1
            else:  # ] or }
                self._depth -= 1
                if self._depth == 1 and self._start is not None:
                    out.append(buf[self._start : pos])
                    self._start = None
        # Keep only the unfinished element (the separators between elements are no use).
        if self._start is None:
            self._buf = b""
        else:
            self._buf = buf[self._start :]
            self._start = 0
        return out

    def tail(self) -> bytes:
        rest, self._buf = self._buf, b""
        self._start = None
        return rest

    @staticmethod
    def data(block: bytes) -> bytes | None:
        return block if block[:1] == b"{" else None
