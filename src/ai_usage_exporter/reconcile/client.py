"""The HTTP side of the fetchers: GET a page of a provider's admin API.

Only this module sees the admin key. It goes into the request header and nowhere
else: not into a message, a log line, an exception or the ledger. A 429 (or a
503) is retried after the `Retry-After` the provider sent, bounded; a 401 or 403
says which environment variable holds the key to check.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("ai_usage_exporter.reconcile")

Params = Sequence[tuple[str, str]]

MAX_ATTEMPTS = 6
DEFAULT_WAIT = 2.0  # seconds, when a 429 carries no Retry-After
MAX_WAIT = 120.0
TIMEOUT = 30.0


class FetchError(Exception):
    """A provider's report could not be fetched; the message says why and what to do."""


class AuthError(FetchError):
    """The provider refused the admin key."""


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class AdminClient:
    """GETs JSON pages from one provider's admin API with its key."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        key: str,
        key_env: str,
        auth_headers: Callable[[str], Mapping[str, str]],
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float = MAX_WAIT,
    ) -> None:
        # Imported here, not at the top: `serve` imports this module at start even when
        # nothing is reconciled, and httpx costs it 0.1-0.3 s on a loaded machine.
        import httpx

        self._httpx = httpx
        self.provider = provider
        self.key_env = key_env
        self._sleep = sleep
        self._max_wait = max_wait
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=dict(auth_headers(key)),
            timeout=TIMEOUT,
            transport=transport,
        )
        self.requests = 0  # pages asked for, retries included

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, params: Params) -> Any:
        """The parsed JSON body (numbers as Decimal, never float) of GET path?params."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self.requests += 1
            try:
                r = self._http.get(path, params=list(params))
            except self._httpx.HTTPError as exc:
                # str(exc) names the URL, never the headers.
                raise FetchError(f"{self.provider}: GET {path} failed: {exc}") from None
            if r.status_code in (429, 503) and attempt < MAX_ATTEMPTS:
                wait = retry_after(r.headers.get("retry-after"), time.time())
                if wait is None:
                    wait = DEFAULT_WAIT * 2 ** (attempt - 1)
                wait = min(wait, self._max_wait)
                log.warning(
                    "%s: %s answered %d; retrying in %.1f s (attempt %d of %d)",
                    self.provider,
                    path,
                    r.status_code,
                    wait,
                    attempt,
                    MAX_ATTEMPTS,
                )
                self._sleep(wait)
                continue
            if r.status_code in (401, 403):
                raise AuthError(
                    f"{self.provider}: {path} answered {r.status_code} ({_message(r)}): the admin "
                    f"key in {self.key_env} was refused; set {self.key_env} to an admin key of "
                    "the organization (a regular API key cannot read usage and costs)"
                )
            if r.status_code != 200:
                raise FetchError(
                    f"{self.provider}: GET {path} answered {r.status_code}: {_message(r)}"
                )
            try:
                return json.loads(r.content, parse_float=Decimal, parse_int=int)
            except ValueError as exc:
                raise FetchError(f"{self.provider}: {path} answered invalid JSON: {exc}") from None
        raise FetchError(f"{self.provider}: {path} still rate limited after {MAX_ATTEMPTS} tries")


# OpenAI's 401 quotes part of the key it refused; none of it is repeated here.
_KEYLIKE = re.compile(r"\b(?:sk|key)[-_][\w*.-]+", re.IGNORECASE)


def _message(r: httpx.Response) -> str:
    """The error message the provider gave, short and without key material."""
    msg: Any = None
    try:
        body = r.json()
        err = body.get("error") if isinstance(body, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err
    except ValueError:
        pass
    if not isinstance(msg, str) or not msg:
        return r.reason_phrase or "no message"
    return _KEYLIKE.sub("[REDACTED]", msg)[:300]
