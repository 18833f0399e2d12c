"""The HTTP client to upstream providers: one pooled keep-alive httpx client, per-upstream timeouts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import httpx

from .config import GatewayConfig, UpstreamConfig

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
}  # fmt: skip
_NOT_TO_CLIENT = _HOP_BY_HOP | {b"set-cookie", b"server", b"date", b"alt-svc"}


def request_headers(
    client_headers: Iterable[tuple[bytes, bytes]], upstream: UpstreamConfig, key: str | None
) -> list[tuple[bytes, bytes]]:
    """The client's headers minus ours, plus the upstream's own and its key."""
    out = [(k, v) for k, v in client_headers if k.lower() not in _NOT_TO_UPSTREAM]
    out.extend((k.lower().encode(), v.encode()) for k, v in upstream.headers.items())
    # The relay parses a copy of each stream; compressed bytes would hide the usage.
    out.append((b"accept-encoding", b"identity"))
    if key is not None:
        out.append((b"authorization", b"Bearer " + key.encode()))
    return out


def response_headers(upstream_headers: httpx.Headers, *, keep_encoding: bool) -> dict[str, str]:
    """The upstream's response headers that describe the body the client gets."""
    out: dict[str, str] = {}
    for k, v in upstream_headers.multi_items():
        lk = k.lower().encode()
        if lk in _NOT_TO_CLIENT or (lk == b"content-encoding" and not keep_encoding):
            continue
        out[k.lower()] = v
    return out


class UpstreamClient:
    """Sends requests to the configured upstreams over one connection pool."""

    def __init__(
        self,
        config: GatewayConfig,
        keys: Mapping[str, str | None],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._keys = dict(keys)
        self._timeouts = {
            name: httpx.Timeout(up.timeout_s, connect=min(up.connect_timeout_s, up.timeout_s))
            for name, up in config.upstreams.items()
        }
        self.http = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(
                max_connections=1024, max_keepalive_connections=256, keepalive_expiry=30.0
            ),
            # Redirects from an API would move a keyed request somewhere unconfigured.
            follow_redirects=False,
            trust_env=False,
        )

    def build(
        self,
        upstream: UpstreamConfig,
        method: str,
        path: str,
        client_headers: Iterable[tuple[bytes, bytes]] = (),
        content: bytes | None = None,
    ) -> httpx.Request:
        return self.http.build_request(
            method,
            upstream.base_url + path,
            content=content,
            headers=request_headers(client_headers, upstream, self._keys.get(upstream.name)),
            timeout=self._timeouts[upstream.name],
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send and return once the response headers arrived; the body is read by the caller."""
        return await self.http.send(request, stream=True)

    @property
    def keys(self) -> list[str]:
        return [k for k in self._keys.values() if k]

    async def aclose(self) -> None:
        await self.http.aclose()
