"""The HTTP client to upstream providers: one pooled keep-alive aiohttp session, per-upstream timeouts.

aiohttp rather than httpx: proxying the same recorded answer on this project's bench
machine, httpx's pool checks every pooled connection on every request (a poll per
socket; encode/httpx#3215), so at 32 concurrent calls it served a few hundred
requests a second where aiohttp's per-host deque of idle connections served thousands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import aiohttp
from yarl import URL

from ai_usage_exporter.config.gateway import GatewayConfig, UpstreamConfig

# What a failed upstream request raises: aiohttp's own errors, and timeouts and socket
# errors from below it (TimeoutError is an OSError).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError)

# Not forwarded either way: hop-by-hop headers (RFC 9110 7.6.1), lengths and encodings
# the two connections set for themselves, and anything that authenticates the client to
# the gateway or an upstream to us.
_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
     b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"host")
)  # fmt: skip
_NOT_TO_UPSTREAM = _HOP_BY_HOP | {
    b"authorization", b"api-key", b"x-api-key", b"cookie", b"accept-encoding", b"x-request-id",
    b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip",
    # Gemini's key header: a client's gateway key must never reach a provider.
    b"x-goog-api-key",
}  # fmt: skip
# The session decodes any content-encoding, so the client gets the body as identity.
_NOT_TO_CLIENT = _HOP_BY_HOP | {b"set-cookie", b"server", b"date", b"alt-svc", b"content-encoding"}


def request_headers(
    client_headers: Iterable[tuple[bytes, bytes]], upstream: UpstreamConfig, key: str | None
) -> list[tuple[str, str]]:
    """The client's headers minus ours, plus the upstream's own and its key."""
    out = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in client_headers
        if k.lower() not in _NOT_TO_UPSTREAM
    ]
    out.extend((k.lower(), v) for k, v in upstream.headers.items())
    # The relay parses a copy of each stream; ask for it uncompressed.
    out.append(("accept-encoding", "identity"))
    if key is not None:
        out.append(("authorization", "Bearer " + key))
    return out


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers that describe the body the client gets, ASGI-style."""
    out: list[tuple[bytes, bytes]] = []
    for k, v in raw:
        lk = k.lower()
        if lk not in _NOT_TO_CLIENT:
            out.append((lk, v))
    return out


class UpstreamClient:
    """Sends requests to the configured upstreams over one connection pool."""

    def __init__(self, config: GatewayConfig, keys: Mapping[str, str | None]) -> None:
        self.config = config
        self._keys = dict(keys)
        # httpx's meaning, kept: `timeout_s` bounds the wait for a pooled connection and
        # each read; `connect_timeout_s` the TCP (and TLS) connect.
        self._timeouts = {
            name: aiohttp.ClientTimeout(
                total=None,
                connect=up.timeout_s,
                sock_connect=min(up.connect_timeout_s, up.timeout_s),
                sock_read=up.timeout_s,
            )
            for name, up in config.upstreams.items()
        }
        self._urls: dict[tuple[str, str], URL] = {}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        # A session belongs to the loop it was made in; the server's loop starts after
        # this object exists, so it is made on first use.
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=1024, limit_per_host=0, keepalive_timeout=30.0, ttl_dns_cache=60
                ),
                # One session serves every client: an upstream's cookies must not be
                # replayed on someone else's request.
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                # A body without a type goes up without one, as the client sent it.
                skip_auto_headers=("Content-Type",),
            )
            self._loop = loop
        return self._session

    def _url(self, upstream: UpstreamConfig, path: str) -> URL:
        url = self._urls.get((upstream.name, path))
        if url is None:
            url = self._urls[(upstream.name, path)] = URL(upstream.base_url + path)
        return url

    async def send(
        self,
        upstream: UpstreamConfig,
        method: str,
        path: str,
        client_headers: Iterable[tuple[bytes, bytes]] = (),
        content: bytes | None = None,
    ) -> aiohttp.ClientResponse:
        """Send and return once the response headers arrived; the body is read by the caller.

        The caller releases the response (`release` after reading it whole, `close` to
        drop the connection midway).
        """
        return await self._session_for_loop().request(
            method,
            self._url(upstream, path),
            data=content,
            headers=request_headers(client_headers, upstream, self._keys.get(upstream.name)),
            timeout=self._timeouts[upstream.name],
            # Redirects from an API would move a keyed request somewhere unconfigured.
            allow_redirects=False,
        )

    @property
    def keys(self) -> list[str]:
        return [k for k in self._keys.values() if k]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
