"""Structured call logs: one JSON line per LLM call, sanitised before it is written.

Modelled on the apps' own logger: `info` for a served call (route, upstream, model,
tokens, cost, duration, status), `warn` for a fallback, `error` for a failure, and
request and response bodies at `debug` only when ``ENABLE_DETAILED_LOGGING`` is on.
``LOG_LEVEL`` (debug, info, warn, error) picks what is written. Every record passes
through `redact.redact_value` (the ledger's redaction), and any configured secret (the provider keys) is cut out of
the final line as well, so no key reaches the log whatever field it hid in.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import orjson

from ai_usage_exporter.core.redact import REDACTED, is_secret_key, redact_text, redact_value

LEVELS: dict[str, int] = {"debug": 10, "info": 20, "warn": 30, "error": 40}
_ALIASES = {"warning": "warn", "err": "error", "critical": "error"}
_TRUE = ("1", "true", "yes", "on")
# Redacted strings remembered per logger (route, upstream, model and key names repeat on
# every line); forgotten all at once when this many are held.
_MAX_REMEMBERED = 4096


def parse_level(value: str) -> str:
    name = _ALIASES.get(value.strip().lower(), value.strip().lower())
    if name not in LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of debug, info, warn, error; got {value!r}")
    return name


class CallLogger:
    """Writes JSON lines to `stream` (stderr by default) at or above `level`."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        level: str = "info",
        detailed: bool = False,
        secrets: Iterable[str] = (),
    ) -> None:
        self.stream = stream
        self.level = parse_level(level)
        self._threshold = LEVELS[self.level]
        self.detailed = detailed
        # Longest first, so a key that contains another is cut whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._lock = threading.Lock()
        # `redact_text` and `is_secret_key` are pure: their answers, by argument.
        self._texts: dict[str, str] = {}
        self._secret_names: dict[str, bool] = {}

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        default_level: str = "info",
        stream: TextIO | None = None,
        secrets: Iterable[str] = (),
    ) -> CallLogger:
        """Honour ``LOG_LEVEL`` and ``ENABLE_DETAILED_LOGGING`` as the apps' logger does."""
        level = environ.get("LOG_LEVEL") or default_level
        detailed = environ.get("ENABLE_DETAILED_LOGGING", "").strip().lower() in _TRUE
        return cls(stream, level=level, detailed=detailed, secrets=secrets)

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self._threshold

    def log(self, level: str, message: str, **fields: Any) -> None:
        line = self.line(level, message, **fields)
        if line is not None:
            self.write([line])

    def line(self, level: str, message: str, **fields: Any) -> str | None:
        """One sanitised JSON line (newline included), or None below the level."""
        if LEVELS[level] < self._threshold:
            return None
        record = {"ts": _now(), "level": level, "msg": message, **self._redacted(fields)}
        line = orjson.dumps(record, default=str).decode()
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line + "\n"

    def _redacted(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`redact_value(fields)`, with the answers for names and strings seen before reused."""
        out: dict[str, Any] = {}
        names, texts = self._secret_names, self._texts
        for k, v in fields.items():
            secret = names.get(k)
            if secret is None:
                secret = names[k] = is_secret_key(k)
            if secret and v not in (None, ""):
                out[k] = REDACTED
            elif v is None or isinstance(v, bool | int | float):
                out[k] = v
            elif type(v) is str:
                text = texts.get(v)
                if text is None:
                    if len(texts) >= _MAX_REMEMBERED:
                        texts.clear()
                    text = texts[v] = redact_text(v)
                out[k] = text
            else:
                out[k] = redact_value(v)
        return out

    def write(self, lines: list[str]) -> None:
        """Write lines from `line` with one write, so a batch costs one system call."""
        if not lines:
            return
        stream = self.stream if self.stream is not None else sys.stderr
        with self._lock:
            stream.write("".join(lines))
            stream.flush()

    def bodies(self, message: str, **fields: Any) -> None:
        """Request and response bodies, at debug, only with detailed logging on."""
        if self.detailed:
            self.log("debug", message, **fields)


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _now() -> str:
    t = time.time()
    whole = int(t)
    if _second[0] != whole:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int(t % 1 * 1000):03d}Z"
