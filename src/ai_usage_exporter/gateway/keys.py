"""Gateway keys: their format, their stored form, and a short-lived cache of lookups.

A key is ``aue_`` followed by 43 URL-safe characters (32 random bytes, 256 bits).
The ledger keeps only its SHA-256: a fast hash is enough for a secret of that much
entropy (nothing to guess), and it lets the ledger find the row by an index. The row
found is compared with the presented key's hash by `hmac.compare_digest`, so the
answer takes the same time whichever byte differs.

Lookups are cached for `ttl_s` (2 s by default), unknown keys too (so a client
retrying a wrong key costs no query each time): a key revoked in the shared ledger is
refused by every sidecar within that time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from ai_usage_exporter.ledger import Ledger
from ai_usage_exporter.ledger.keys import KeyRecord

PREFIX = "aue_"
_SECRET_BYTES = 32
SECRET_CHARS = 43  # len(secrets.token_urlsafe(32))
KEY_PATTERN = re.compile(rf"^{PREFIX}[A-Za-z0-9_-]{{{SECRET_CHARS}}}$")
# Enough of a key for a person to tell keys apart; 4 characters after the prefix take
# 24 of the 256 bits, leaving far more than can be guessed.
SHOWN_CHARS = len(PREFIX) + 4
DEFAULT_TTL_S = 2.0
MAX_CACHED = 10_000


def generate_key() -> str:
    return PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def shown(key: str) -> str:
    """How a key may appear in a message or a listing: its first characters only."""
    return key[:SHOWN_CHARS] + "…"


def looks_like_key(token: str) -> bool:
    """Whether a bearer token is meant as a gateway key (it has the prefix)."""
    return token.startswith(PREFIX)


def malformed(token: str) -> str | None:
    """Why a token with the key prefix is not a well-formed key, or None if it is."""
    if KEY_PATTERN.match(token):
        return None
    return (
        f"malformed gateway key {shown(token)!r} ({len(token)} characters): a key is "
        f"{PREFIX!r} followed by {SECRET_CHARS} letters, digits, '-' or '_', as "
        "`ai-usage-exporter keys create` printed it"
    )


class KeyCache:
    """Key records by hash, read from the ledger at most once per `ttl_s` each."""

    def __init__(
        self,
        ledger: Ledger,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.ttl_s = ttl_s
        self.clock = clock
        self._by_hash: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()
        self._count: tuple[float, int] | None = None

    async def lookup(self, token: str) -> KeyRecord | None:
        """The stored key `token` is, or None when no key matches it."""
        digest = hash_key(token)
        now = self.clock()
        hit = self._by_hash.get(digest)
        if hit is not None and now - hit[0] < self.ttl_s:
            record = hit[1]
        else:
            record = await asyncio.to_thread(self.ledger.key_by_hash, digest)
            self._by_hash[digest] = (now, record)
            self._by_hash.move_to_end(digest)
            while len(self._by_hash) > MAX_CACHED:
                self._by_hash.popitem(last=False)
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            return None
        return record

    async def any_keys(self) -> bool:
        """Whether the ledger holds a key that is not revoked (then every caller needs one)."""
        now = self.clock()
        if self._count is None or now - self._count[0] >= self.ttl_s:
            self._count = (now, await asyncio.to_thread(self.ledger.count_keys))
        return self._count[1] > 0
