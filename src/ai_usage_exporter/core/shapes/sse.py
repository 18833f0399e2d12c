"""An incremental Server-Sent Events parser: bytes in, in any split, (event, data) out.

It follows the WHATWG HTML "event stream interpretation" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end in CRLF, LF or CR; a line starting with a colon is a comment; `data` lines
join with a newline; a blank line dispatches the event, and an event with no data is
not dispatched. Lines are split on bytes before decoding, which is safe for UTF-8
(neither CR nor LF occurs inside a multi-byte sequence), so a chunk boundary may fall
anywhere, even inside a character. `id` and `retry` are read and dropped: the
gateway relays the bytes themselves and only needs each event's name and data.
"""

from __future__ import annotations

SSEEvent = tuple[str | None, str]

_BOM = "\ufeff"


class SSEParser:
    """Turn a byte stream, fed in chunks of any size, into `(event name or None, data)`."""

    __slots__ = ("_buffer", "_skip_lf", "_event", "_data", "_started")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skip_lf = False  # the last chunk ended in CR: a leading LF belongs to it
        self._event: str | None = None
        self._data: list[str] = []
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse one chunk and return the events it completed, in order."""
        out: list[SSEEvent] = []
        if not chunk:
            return out
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buffer
        buf += chunk
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < n and buf[nxt] == 0x0A:
                    nxt += 1
                elif nxt == n:
                    self._skip_lf = True
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            self._line(bytes(buf[start:end]), out)
            start = nxt
        del buf[:start]
        return out

    def flush(self) -> list[SSEEvent]:
        """End of stream: return the event still pending, if it has data.

        The standard discards an event not closed by a blank line; recorded bodies
        often end without one, and a stream cut midway is still worth counting, so
        the unterminated tail is treated as a last line. Its data may be truncated.
        """
        out: list[SSEEvent] = []
        if self._buffer:
            self._line(bytes(self._buffer), out)
            self._buffer.clear()
        self._skip_lf = False
        self._line(b"", out)
        return out

    def _line(self, raw: bytes, out: list[SSEEvent]) -> None:
        line = raw.decode("utf-8", "replace")
        if not self._started:
            self._started = True
            if line.startswith(_BOM):
                line = line[1:]
        if not line:
            if self._data:
                out.append((self._event, "\n".join(self._data)))
            self._event = None
            self._data = []
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value or None


def parse_sse(data: bytes) -> list[SSEEvent]:
    """Parse a whole SSE body at once, including an unterminated last event."""
    parser = SSEParser()
    return parser.feed(data) + parser.flush()
