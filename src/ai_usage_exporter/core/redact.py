"""Credential redaction for what the ledger stores and the logs print (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ai_usage_exporter.core.events.model import UsageEvent

REDACTED = "[REDACTED]"

_SECRET = re.compile(
    r"""
    \bsk-[A-Za-z0-9_\-]{8,}                                   # OpenAI, Anthropic (sk-ant-...)
    | \bBearer\s+[A-Za-z0-9._~+/=\-]{8,}                      # HTTP bearer tokens
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                           # AWS access key ids
    | \bAIza[0-9A-Za-z_\-]{30,}                               # Google API keys
    | \bgh[pousr]_[A-Za-z0-9]{20,}                            # GitHub tokens
    | \baue_[A-Za-z0-9_\-]{20,}                               # this gateway's own keys
    | \bxox[abprs]-[A-Za-z0-9\-]{10,}                         # Slack tokens
    | \beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]+  # JWTs
    """,
    re.VERBOSE,
)
# `api_key=...`, `"token": "..."`, `password: ...`: keep the name, hide the value.
_ASSIGNMENT = re.compile(
    r"""(?ix)
    \b((?:api[_-]?key|access[_-]?key|secret(?:[_-]?key)?|token|password|passwd|authorization)
    ["']?\s*[:=]\s*["']?)
    ([^\s"',;&]+)
    """
)
# A key whose value is a credential. `token` counts unless it is a count of tokens
# (`max_tokens`, `prompt_tokens_details`, `token_count`) or a tokenizer's name.
_SECRET_KEYS = re.compile(
    r"""(?ix)
    api[_-]?key|secret|password|passwd|authorization|credential
    | token(?!s|iz|_?(?:count|limit|budget|usage|type))
    """
)


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _SECRET_KEYS.search(key) is not None


def redact_text(text: str) -> str:
    if not text:
        return text
    text = _SECRET.sub(REDACTED, text)
    return _ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)


def redact_value(value: Any) -> Any:
    """Redact JSON-like data: credentials inside every string, and the whole value under a
    secret-looking key (unless it is empty). What the ledger stores and the call logs print.

    Numbers, booleans and None elsewhere are kept (`input_tokens` is a count); anything
    that is not JSON becomes its redacted `str()`, so a log line can always be written.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if is_secret_key(k) and v not in (None, "") else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return redact_text(str(value))


def redact_event(e: UsageEvent) -> None:
    """Redact, in place, the free-text fields of an event before it is stored."""
    if e.metadata is not None:
        e.metadata = redact_value(e.metadata)
    if e.error_type is not None:
        e.error_type = redact_text(e.error_type)
    if e.prompt_text is not None:
        e.prompt_text = redact_text(e.prompt_text)
    if e.response_text is not None:
        e.response_text = redact_text(e.response_text)
    if e.query_text is not None:
        e.query_text = redact_text(e.query_text)
