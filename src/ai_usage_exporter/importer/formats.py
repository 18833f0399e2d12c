"""The usage records in log lines as apps and their platforms write them (pure).

One `LineReader` per file turns each line into a record (a JSON object for
`parse_events`), None for a line that holds no usage record (blank, comment, any
other log line: skipped, never an error), or raises `LineError` for a usage line
that cannot be read (malformed JSON after a `TOKEN_USAGE` marker, a CSV row with a
bad number). What it reads:

- JSON objects: flat events and query summaries, bare or after any logging prefix
  (Python logging, uvicorn/gunicorn, `docker logs -t`, journald's short format,
  Kubernetes' CRI format, with its `P` partial lines joined);
- a logger's JSON line (Docker's json-file driver `{"log": ...}`, python-json-logger
  and the like `{"message": ...}`, journald `-o json` `{"MESSAGE": ...}`, structlog
  `{"event": ...}`): the record in its message text, else in one of its object
  fields, else its own fields that the event table knows (structlog's
  `log.info("llm call", provider=..., model=..., usage=...)`);
- a Python dict's repr (`logger.info(summary)`), when it names token counts;
- CSV with a header of event fields (ours, or the OpenAI `prompt_tokens` spelling).

What counts as a usage record: a query summary, or an object with token counts
(flat or a provider's `usage`/`response`/`stream`), or with both `provider` and
`model`. Anything else a logger wrote is not ours to judge.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from ai_usage_exporter.core.events.model import TOKEN_ALIASES
from ai_usage_exporter.core.events.validate import EVENT_FIELDS
from ai_usage_exporter.core.shapes import USAGE_FIELDS

SUMMARY = "token_usage_summary"
BOM = b"\xef\xbb\xbf"
MARKER = b"TOKEN_USAGE"
# Keys that only a usage record has: any one of them makes an object ours.
_TOKEN_KEYS = frozenset(
    (*USAGE_FIELDS, *TOKEN_ALIASES, "total_tokens", "usage", "usageMetadata", "response",
     "stream", "inferences")
)  # fmt: skip
# Keys loggers put around a message; an object with any of them and unknown keys
# besides is a log line, not an event with a misspelt field.
_ENVELOPE_KEYS = frozenset(
    ("log", "message", "msg", "MESSAGE", "event", "levelname", "logger", "logger_name",
     "name", "time", "@timestamp", "severity", "asctime", "lineno", "module", "func_name",
     "funcName", "filename", "pathname", "thread", "process", "exc_info", "logtag",
     "__REALTIME_TIMESTAMP", "_HOSTNAME", "SYSLOG_IDENTIFIER", "PRIORITY")
)  # fmt: skip
# Where a logger keeps the message text, in the order looked at.
_MESSAGE_KEYS = ("message", "msg", "log", "MESSAGE", "event")
# A logger's own fields that share a name with an event field but mean the log
# line's: its level (INFO, critical) and Docker's `stream` (stdout).
_ENVELOPE_ONLY = frozenset(("level", "stream"))
_CSV_EXTRA = frozenset(("total_tokens",))
_INT_FIELDS = frozenset((*USAGE_FIELDS, *TOKEN_ALIASES, "total_tokens"))
_FLOAT_FIELDS = frozenset(("duration_ms", "ttft_ms", "cost_usd", "provider_cost_usd"))
# A line that names token counts or the marker is a usage line even when broken.
_USAGE_HINT = re.compile(
    rb"(?i)token_usage|[\"'](?:input|output|prompt|completion|total)_tokens[\"']"
    rb"|[\"']inferences[\"']|[\"']usageMetadata[\"']"
)
# Kubernetes' CRI log line: time, stream, P (partial) or F (full), the text.
_CRI = re.compile(rb"^(\S+) (stdout|stderr) ([PF]) ?(.*)$", re.S)
_MAX_DEPTH = 4
_MAX_PARTIAL = 16 * 1024 * 1024
_MAX_BLOCK_LINES = 100_000


class LineError(ValueError):
    """One line is a usage line that cannot be read as an event."""


def content_key(obj: Mapping[str, Any]) -> str:
    """An idempotency key from a record's content: the same record gives the same key.

    It hashes the record, not the line, so the same summary logged bare, after a
    prefix or inside a Docker envelope counts once.
    """
    digest = hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    if obj.get("event") == SUMMARY and isinstance(obj.get("query_id"), str):
        # Per inference, the parser appends #0, #1, ... to this.
        return f"import:{obj['query_id']}:{digest}"
    return f"import:{digest}"


def _usage_like(obj: Mapping[str, Any]) -> bool:
    return not _TOKEN_KEYS.isdisjoint(obj) or ("provider" in obj and "model" in obj)


def classify(obj: dict[str, Any], depth: int = 0) -> dict[str, Any] | None:
    """The usage record a decoded JSON object is or carries, else None."""
    if obj.get("event") == SUMMARY:
        return obj
    if EVENT_FIELDS.issuperset(obj) or _ENVELOPE_KEYS.isdisjoint(obj):
        # An event (maybe with a misspelt field, which validation then names).
        return obj if _usage_like(obj) else None
    if depth < _MAX_DEPTH:
        for key in _MESSAGE_KEYS:
            text = obj.get(key)
            if isinstance(text, str) and "{" in text:
                found = parse_text(text.encode("utf-8", "surrogatepass"), depth + 1)
                if found is not None:
                    return found
        for value in obj.values():
            if isinstance(value, dict) and (
                value.get("event") == SUMMARY or ("provider" in value and "model" in value)
            ):
                found = classify(value, depth + 1)
                if found is not None:
                    return found
    # Its own fields count only with token counts: a logger's "calling the model"
    # line before the call names provider and model too.
    own = _own_fields(obj)
    return own if not _TOKEN_KEYS.isdisjoint(own) else None


def _own_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A logger line's fields that the event table knows, as an event."""
    out = {k: v for k, v in obj.items() if k in EVENT_FIELDS and k not in _ENVELOPE_ONLY}
    stream = obj.get("stream")
    if isinstance(stream, list):  # decoded stream events, not Docker's "stdout"
        out["stream"] = stream
    for key in ("usage", "usageMetadata", "response"):
        if key in out and not isinstance(out[key], dict):
            del out[key]
    ts = out.get("timestamp")
    if isinstance(ts, str):
        # A logger's timestamp without an offset is read as UTC, like a summary's.
        try:
            parsed = datetime.fromisoformat(ts.replace(",", "."))
        except ValueError:
            return out  # validation names it
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        out["timestamp"] = parsed.timestamp()
    return out


def _decode(text: bytes) -> Any:
    """The JSON value at the start of `text`; text after it is a logger's suffix."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not UTF-8: {exc}") from None
    if decoded.startswith("{'"):
        try:
            return ast.literal_eval(decoded.strip())  # `logger.info(a_dict)` writes its repr
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    try:
        value, _end = json.JSONDecoder().raw_decode(decoded)
    except json.JSONDecodeError as exc:
        raise LineError(f"malformed JSON: {exc}") from None
    return value


def parse_text(text: bytes, depth: int = 0) -> dict[str, Any] | None:
    """The usage record in a line of text: JSON (or a dict's repr) after any prefix."""
    start = text.find(b"{")
    if start < 0:
        return None
    starts = [start]
    marker = text.find(MARKER, 0, start) if start else -1
    if marker < 0:
        after = text.find(MARKER)
        if after >= 0:
            # `{` in the prefix (`{app}`): the object is the one after the marker.
            brace = text.find(b"{", after)
            if brace > start:
                starts.append(brace)
    error: LineError | None = None
    for s in starts:
        try:
            obj = _decode(text[s:])
        except LineError as exc:
            error = error or exc
            continue
        if isinstance(obj, dict):
            return classify(obj, depth)
    if error is not None and _USAGE_HINT.search(text):
        raise error
    return None


class LineReader:
    """Reads one file's lines into records, keeping what spans lines: the CSV header,
    a CRI or Docker line split into parts, and a pretty-printed JSON object."""

    __slots__ = ("block", "block_depth", "block_lines", "header", "pending", "seen_data")

    def __init__(self, header: list[str] | None = None, pending: str = "", block: str = "") -> None:
        self.header = header
        self.pending = pending.encode("utf-8", "surrogatepass")  # a split line so far
        # A JSON object written over several lines (`json.dumps(summary, indent=2)`).
        self.block = block.encode("utf-8", "surrogatepass")
        self.block_depth = _depth(self.block, 0)[0] if block else 0
        self.block_lines = block.count("\n")
        self.seen_data = header is not None

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume mid-file."""
        return {
            "header": self.header,
            "pending": self.pending.decode("utf-8", "replace"),
            "block": self.block.decode("utf-8", "replace"),
        }

    def snapshot(self) -> tuple[Any, ...]:
        """Everything it holds, for `restore`."""
        return tuple(getattr(self, name) for name in self.__slots__)

    def restore(self, snap: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, snap, strict=True):
            setattr(self, name, value)

    @property
    def waiting(self) -> bool:
        """Whether a record begun on earlier lines is not complete yet."""
        return bool(self.pending or self.block)

    def read(self, line: bytes) -> dict[str, Any] | None:
        """The record of one line (its newline may be there or not), or None; LineError."""
        if self.block:
            return self._continue_block(line)
        text = line.strip()
        if text.startswith(BOM):
            text = text[3:].lstrip()
        if not text:
            return None
        first = text[0]
        if first == 0x7B:  # {
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError:
                self.seen_data = True
                return self._text(text)
            self.seen_data = True
            if not isinstance(obj, dict):
                return None
            if "log" in obj and "time" in obj and isinstance(obj["log"], str):
                return self._docker(obj)
            return classify(obj)
        if first == 0x23:  # a comment: our usage log's summary blocks
            return None
        if self.header is not None:
            return parse_csv_row(text, self.header)
        if not self.seen_data and b"," in text:
            self.seen_data = True
            header = csv_header(text)
            if header is not None:
                self.header = header
                return None
        self.seen_data = True
        if b" stdout " in text[:64] or b" stderr " in text[:64]:
            cri = _CRI.match(text)
            if cri is not None:
                return self._cri(cri.group(3), cri.group(4))
        return self._text(text)

    def _text(self, text: bytes) -> dict[str, Any] | None:
        if text[-1] == 0x7B:  # `{` ends the line: an object written over several lines
            start = text.find(b"{")
            if text[start + 1 :].strip() == b"":
                self.block, self.block_depth, self.block_lines = text[start:], 1, 1
                return None
        return parse_text(text)

    def _continue_block(self, line: bytes) -> dict[str, Any] | None:
        text = line.rstrip(b"\r\n")
        self.block += b"\n" + text
        self.block_lines += 1
        self.block_depth, in_string = _depth(text, self.block_depth)
        if self.block_depth > 0 or in_string:
            if self.block_lines > _MAX_BLOCK_LINES or len(self.block) > _MAX_PARTIAL:
                self.block = b""
                raise LineError(
                    f"a JSON object still open after {_MAX_BLOCK_LINES} lines (or "
                    f"{_MAX_PARTIAL} bytes); is its closing brace missing?"
                )
            return None
        block, self.block = self.block, b""
        return parse_text(block)

    def _join(self, part: bytes, complete: bool) -> bytes | None:
        if not complete:
            if len(self.pending) + len(part) > _MAX_PARTIAL:
                self.pending = b""
                raise LineError(f"a split log line longer than {_MAX_PARTIAL} bytes")
            self.pending += part
            return None
        whole, self.pending = self.pending + part, b""
        return whole

    def _cri(self, flag: bytes, part: bytes) -> dict[str, Any] | None:
        whole = self._join(part, flag == b"F")
        return None if whole is None else parse_text(whole.strip())

    def _docker(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        # The json-file driver splits a line over 16 KiB; only the last part ends in \n.
        log: str = obj["log"]
        whole = self._join(log.encode("utf-8", "surrogatepass"), log.endswith("\n"))
        return None if whole is None else parse_text(whole.strip())


def _depth(text: bytes, depth: int) -> tuple[int, bool]:
    """The nesting depth after `text`, starting at `depth`, and whether a string is open.

    Strings in a pretty-printed object never span lines, so each line starts outside one.
    """
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c == 0x7B or c == 0x5B:
            depth += 1
        elif c == 0x7D or c == 0x5D:
            depth -= 1
    return depth, in_string


def csv_header(text: bytes) -> list[str] | None:
    """The field names when `text` is a CSV header of event fields, else None.

    A first line that names `provider` and `model` among comma-separated words is a
    header; an unknown column in it is an error naming the column.
    """
    line = text.decode("utf-8", "replace").strip()
    if "{" in line:
        return None
    names = [n.strip() for n in next(csv.reader([line]))]
    allowed = EVENT_FIELDS | _CSV_EXTRA
    if all(n in allowed for n in names) and "provider" in names:
        return names
    if "provider" in names and "model" in names:
        from ai_usage_exporter.core.events.validate import unknown_fields_message

        bad = [n for n in names if n not in allowed]
        raise LineError(f"CSV header: {unknown_fields_message(bad, allowed)}")
    return None


def parse_csv_row(text: bytes, header: list[str]) -> dict[str, Any] | None:
    """One CSV row under `header` as an event object; LineError names a bad cell."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not UTF-8: {exc}") from None
    values = next(csv.reader([decoded]))
    if len(values) != len(header):
        raise LineError(f"{len(values)} fields where the header has {len(header)}")
    obj: dict[str, Any] = {}
    for name, value in zip(header, values, strict=True):
        value = value.strip()
        if value == "":
            continue
        try:
            if name in _INT_FIELDS:
                obj[name] = _csv_int(value)
            elif name in _FLOAT_FIELDS:
                obj[name] = float(value)
            elif name == "timestamp":
                obj[name] = float(value) if value.replace(".", "", 1).isdigit() else value
            elif name == "metadata":
                obj[name] = orjson.loads(value)
            else:
                obj[name] = value
        except (ValueError, orjson.JSONDecodeError):
            raise LineError(f"{name}: cannot read {value!r}") from None
    return obj


def _csv_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        # A spreadsheet writes 12 as 12.0; 12.5 tokens stays an error.
        number = float(value)
        if not number.is_integer():
            raise
        return int(number)
