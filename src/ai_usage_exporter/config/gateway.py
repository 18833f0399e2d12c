"""The config file's `gateway:` section: upstreams, routes, timeouts and client tokens (pure).

Provider keys are never in the file: each upstream names the environment variable
that holds its key (`api_key_env`), and `read_keys` reads them when the gateway starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ai_usage_exporter.config.fields import ConfigError, located, token_list, unknown_key

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECTION_KEYS = {"upstreams", "routes", "default_route", "default_routes", "timeout_s",
                 "connect_timeout_s", "client_tokens", "models_endpoint", "rate_limits",
                 "key_cache_s"}  # fmt: skip
_RATE_LIMIT_KEYS = {"redis", "on_redis_error", "prefix"}
ON_REDIS_ERROR = ("open", "closed")
DEFAULT_KEY_CACHE_S = 2.0
_UPSTREAM_KEYS = {"provider", "base_url", "api_key_env", "models", "timeout_s", "connect_timeout_s",
                  "headers", "api", "auth", "api_version"}  # fmt: skip
_ROUTE_KEYS = {"upstreams"}
MODELS_ENDPOINTS = ("proxy", "aggregate")
# The wire APIs an upstream may speak; a route's upstreams all speak one of them.
APIS = ("openai", "anthropic", "gemini")
# How an upstream's key is sent: the header each provider's own SDK uses.
AUTH_HEADERS = {
    "bearer": "authorization",
    "x-api-key": "x-api-key",
    "api-key": "api-key",
    "x-goog-api-key": "x-goog-api-key",
}
DEFAULT_AUTH = {"openai": "bearer", "anthropic": "x-api-key", "gemini": "x-goog-api-key"}


@dataclass(frozen=True)
class UpstreamConfig:
    """One provider endpoint the gateway may call."""

    name: str
    provider: str
    base_url: str
    api_key_env: str | None = None
    # Requested model -> the name this upstream knows it by.
    models: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    # Extra request headers (e.g. an API version); never secrets, which come from env.
    headers: Mapping[str, str] = field(default_factory=dict)
    api: str = "openai"
    # A key of AUTH_HEADERS: which header carries the key.
    auth: str = "bearer"
    # Azure OpenAI's `api-version` query parameter, sent on every request when set.
    api_version: str | None = None

    def upstream_model(self, model: str) -> str:
        return self.models.get(model, model)


@dataclass(frozen=True)
class RouteConfig:
    """A named route: the upstreams to try, in order."""

    name: str
    upstreams: tuple[str, ...]
    api: str = "openai"


@dataclass(frozen=True)
class RateLimitConfig:
    """Where the per-key RPM/TPM buckets live: this sidecar, or one Redis for the fleet."""

    redis: str | None = None
    # open: a call goes on unlimited while Redis is unreachable; closed: it gets a 503.
    on_redis_error: str = "open"
    prefix: str = "aue:rl"


@dataclass(frozen=True)
class GatewayConfig:
    upstreams: Mapping[str, UpstreamConfig]
    routes: Mapping[str, RouteConfig]
    # The OpenAI routes' default (what /v1/chat/completions uses); None without one.
    default_route: str | None
    client_tokens: tuple[str, ...] = ()
    # `proxy`: GET /v1/models answers with the default route's first upstream's list;
    # `aggregate`: the union over every upstream of the default route.
    models_endpoint: str = "proxy"
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    # How long a key looked up in the ledger is trusted: a revoke takes effect within it.
    key_cache_s: float = DEFAULT_KEY_CACHE_S
    # API -> the route its un-prefixed native paths use (/v1/messages, /v1beta/models/...).
    default_routes: Mapping[str, str] = field(default_factory=dict)

    def default_for(self, api: str) -> str | None:
        return self.default_route if api == "openai" else self.default_routes.get(api)


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{where}: expected a number of seconds > 0, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str, allowed: set[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if allowed is not None:
        for k in value:
            if k not in allowed:
                raise ConfigError(
                    f"{located(_file(where), value, k)}: {unknown_key('key', k, allowed)}"
                )
    return value


def _file(where: str) -> str:
    return where.rsplit(":", 1)[0] if where.rsplit(":", 1)[-1].isdigit() else where


def _str_map(value: Any, where: str) -> dict[str, str]:
    m = _mapping(value, where)
    out: dict[str, str] = {}
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k or not v:
            raise ConfigError(f"{where}: expected name: value strings, got {k!r}: {v!r}")
        out[k] = v
    return out


def _name(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(
            f"{where}: {what} {value!r} must be 1-64 letters, digits, '_', '-' or '.'"
        )
    return value


def _upstream(name: str, value: Any, where: str, defaults: Mapping[str, float]) -> UpstreamConfig:
    path = _file(where)
    sec = _mapping(value, where, _UPSTREAM_KEYS)
    for required in ("provider", "base_url"):
        if required not in sec:
            raise ConfigError(f"{where}: upstream {name!r} needs {required}")
    provider = _name(sec["provider"], located(path, sec, "provider"), "provider")
    base_url = sec["base_url"]
    url_where = located(path, sec, "base_url")
    if not isinstance(base_url, str):
        raise ConfigError(f"{url_where}: base_url must be a string, got {base_url!r}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{url_where}: base_url must be an http(s) URL, got {base_url!r}")
    if parts.username or parts.password or parts.query:
        # A key in the URL would be logged with it; keys belong in api_key_env.
        raise ConfigError(
            f"{url_where}: base_url must not carry credentials or a query; use api_key_env"
        )
    key_env = sec.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.match(key_env)):
        raise ConfigError(
            f"{located(path, sec, 'api_key_env')}: api_key_env must name an environment "
            f"variable (the key itself never goes in the file), got {key_env!r}"
        )
    api = sec.get("api", "openai")
    if api not in APIS:
        raise ConfigError(
            f"{located(path, sec, 'api')}: api must be one of {', '.join(APIS)}, got {api!r}"
        )
    auth = sec.get("auth", DEFAULT_AUTH[api])
    if auth not in AUTH_HEADERS:
        raise ConfigError(
            f"{located(path, sec, 'auth')}: auth must be one of {', '.join(AUTH_HEADERS)}, "
            f"got {auth!r}"
        )
    api_version = sec.get("api_version")
    if api_version is not None and (not isinstance(api_version, str) or not api_version):
        raise ConfigError(
            f"{located(path, sec, 'api_version')}: api_version must be a string such as "
            f"'2024-10-21', got {api_version!r}"
        )
    return UpstreamConfig(
        name=name,
        api=api,
        auth=auth,
        api_version=api_version,
        provider=provider,
        base_url=base_url.rstrip("/"),
        api_key_env=key_env,
        models=_str_map(sec.get("models", {}), located(path, sec, "models")),
        timeout_s=_float(sec["timeout_s"], located(path, sec, "timeout_s"))
        if "timeout_s" in sec
        else defaults["timeout_s"],
        connect_timeout_s=_float(sec["connect_timeout_s"], located(path, sec, "connect_timeout_s"))
        if "connect_timeout_s" in sec
        else defaults["connect_timeout_s"],
        headers=_str_map(sec.get("headers", {}), located(path, sec, "headers")),
    )


def parse_gateway(value: Any, where: str) -> GatewayConfig:
    """Validate the `gateway:` mapping; `where` is "file:line" of the section."""
    path = _file(where)
    sec = _mapping(value, where, _SECTION_KEYS)
    defaults = {
        "timeout_s": _float(sec["timeout_s"], located(path, sec, "timeout_s"))
        if "timeout_s" in sec
        else DEFAULT_TIMEOUT_S,
        "connect_timeout_s": _float(
            sec["connect_timeout_s"], located(path, sec, "connect_timeout_s")
        )
        if "connect_timeout_s" in sec
        else DEFAULT_CONNECT_TIMEOUT_S,
    }
    ups_where = located(path, sec, "upstreams")
    ups_sec = _mapping(sec.get("upstreams"), ups_where)
    if not ups_sec:
        raise ConfigError(f"{ups_where}: gateway.upstreams must name at least one upstream")
    upstreams = {
        _name(n, ups_where, "upstream name"): _upstream(n, v, located(path, ups_sec, n), defaults)
        for n, v in ups_sec.items()
    }
    routes_where = located(path, sec, "routes")
    if "routes" in sec:
        routes_sec = _mapping(sec["routes"], routes_where)
    else:
        # Without routes, each upstream is a route of its own.
        routes_sec = {n: {"upstreams": [n]} for n in upstreams}
    routes: dict[str, RouteConfig] = {}
    for rname, rvalue in routes_sec.items():
        rwhere = located(path, routes_sec, rname)
        _name(rname, rwhere, "route name")
        r = _mapping(rvalue, rwhere, _ROUTE_KEYS)
        names = r.get("upstreams")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{rwhere}: route {rname!r} needs upstreams: a list of names")
        for n in names:
            if n not in upstreams:
                raise ConfigError(
                    f"{rwhere}: route {rname!r} names upstream {n!r}, which is not defined; "
                    f"defined: {', '.join(sorted(upstreams))}"
                )
        if len(set(names)) != len(names):
            raise ConfigError(f"{rwhere}: route {rname!r} lists an upstream twice: {names}")
        apis = {upstreams[n].api for n in names}
        if len(apis) > 1:
            # Fallback relays the same request body to the next upstream; it must speak
            # the same API.
            spoken = ", ".join(f"{n} ({upstreams[n].api})" for n in names)
            raise ConfigError(
                f"{rwhere}: route {rname!r} mixes APIs: {spoken}; a route's upstreams must "
                "all speak one API"
            )
        routes[rname] = RouteConfig(rname, tuple(names), apis.pop())
    if not routes:
        raise ConfigError(f"{routes_where}: gateway.routes must name at least one route")
    by_api = {api: [r for r in routes.values() if r.api == api] for api in APIS}
    default = sec.get("default_route")
    dwhere = located(path, sec, "default_route")
    if default is None:
        default = by_api["openai"][0].name if by_api["openai"] else None
    elif default not in routes:
        raise ConfigError(
            f"{dwhere}: default_route {default!r} is not a route; "
            f"routes: {', '.join(sorted(routes))}"
        )
    elif routes[default].api != "openai":
        raise ConfigError(
            f"{dwhere}: default_route {default!r} speaks the {routes[default].api} API; "
            f"default_route is the OpenAI routes' default, use default_routes: "
            f"{{{routes[default].api}: {default}}}"
        )
    default_routes = _default_routes(sec, path, routes, by_api)
    tokens = (
        token_list(sec["client_tokens"], located(path, sec, "client_tokens"))
        if "client_tokens" in sec
        else ()
    )
    models_endpoint = sec.get("models_endpoint", "proxy")
    if models_endpoint not in MODELS_ENDPOINTS:
        raise ConfigError(
            f"{located(path, sec, 'models_endpoint')}: models_endpoint must be proxy or "
            f"aggregate, got {models_endpoint!r}"
        )
    rate_limits = (
        _rate_limits(sec["rate_limits"], located(path, sec, "rate_limits"))
        if "rate_limits" in sec
        else RateLimitConfig()
    )
    key_cache_s = (
        _float(sec["key_cache_s"], located(path, sec, "key_cache_s"))
        if "key_cache_s" in sec
        else DEFAULT_KEY_CACHE_S
    )
    return GatewayConfig(
        upstreams,
        routes,
        default,
        tokens,
        models_endpoint,
        rate_limits,
        key_cache_s,
        default_routes,
    )


def _default_routes(
    sec: Mapping[str, Any],
    path: str,
    routes: Mapping[str, RouteConfig],
    by_api: Mapping[str, list[RouteConfig]],
) -> dict[str, str]:
    """The native APIs' default routes: as configured, else an API's only route."""
    where = located(path, sec, "default_routes")
    given = _mapping(sec.get("default_routes", {}), where, {"anthropic", "gemini"})
    out: dict[str, str] = {}
    for api in ("anthropic", "gemini"):
        name = given.get(api)
        if name is None:
            if len(by_api[api]) == 1:
                out[api] = by_api[api][0].name
            continue
        if name not in routes or routes[name].api != api:
            names = ", ".join(r.name for r in by_api[api]) or "none"
            raise ConfigError(
                f"{located(path, given, api)}: default_routes.{api} {name!r} is not a route of "
                f"the {api} API; {api} routes: {names}"
            )
        out[api] = name
    return out


def _rate_limits(value: Any, where: str) -> RateLimitConfig:
    path = _file(where)
    sec = _mapping(value, where, _RATE_LIMIT_KEYS)
    url = sec.get("redis")
    if url is not None:
        url_where = located(path, sec, "redis")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"{url_where}: rate_limits.redis must be a redis://, rediss:// or unix:// URL, "
                f"got {url!r}"
            )
    on_error = sec.get("on_redis_error", "open")
    if on_error not in ON_REDIS_ERROR:
        raise ConfigError(
            f"{located(path, sec, 'on_redis_error')}: rate_limits.on_redis_error must be open or "
            f"closed, got {on_error!r}"
        )
    prefix = sec.get("prefix", "aue:rl")
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(
            f"{located(path, sec, 'prefix')}: rate_limits.prefix must be a non-empty string, "
            f"got {prefix!r}"
        )
    return RateLimitConfig(url, on_error, prefix)


def read_keys(config: GatewayConfig, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each upstream's key from the environment; a named but unset variable is an error.

    Every missing variable is named at once, so a first start does not fail once per key.
    """
    keys: dict[str, str | None] = {}
    missing: list[tuple[str, str]] = []
    for up in config.upstreams.values():
        if up.api_key_env is None:
            keys[up.name] = None
            continue
        key = environ.get(up.api_key_env, "").strip()
        if not key:
            missing.append((up.name, up.api_key_env))
        keys[up.name] = key
    if len(missing) == 1:
        ((name, env),) = missing
        raise ConfigError(
            f"gateway upstream {name!r}: environment variable {env} is not set or empty; "
            "set it to the provider's API key"
        )
    if missing:
        named = ", ".join(f"{env} (upstream {name!r})" for name, env in missing)
        raise ConfigError(
            f"gateway: environment variables {named} are not set or empty; set each to its "
            "provider's API key"
        )
    return keys
