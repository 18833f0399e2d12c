"""Credential redaction for what the ledger stores and the logs print (pure)."""

from __future__ import annotations

import re
from typing import Any

from .events import UsageEvent

REDACTED = "[REDACTED]"

_SECRET = re.compile(
    r"""
    \bsk-[A-Za-z0-9_\-]{8,}                                   # OpenAI, Anthropic (sk-ant-...)
    | \bBearer\s+[A-Za-z0-9._~+/=\-]{8,}                      # HTTP bearer tokens
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                           # AWS access key ids
    | \bAIza[0-9A-Za-z_\-]{30,}                               # Google API keys
    | \bgh[pousr]_[A-Za-z0-9]{20,}                            # GitHub tokens
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
_SECRET_KEYS = re.compile(
    r"(?i)(api[_-]?key|secret|password|passwd|token|authorization|credential)"
)


def redact_text(text: str) -> str:
    if not text:
        return text
    text = _SECRET.sub(REDACTED, text)
    return _ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)


def redact_value(value: Any) -> Any:
    """Redact strings inside JSON-like data; values under secret-looking keys entirely."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and _SECRET_KEYS.search(k) and v not in (None, "")
                else redact_value(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


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
