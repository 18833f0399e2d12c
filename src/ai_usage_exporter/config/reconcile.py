"""The config file's `reconcile:` section: which providers' bills to fetch, and how.

```yaml
reconcile:
  interval: 1h                 # how often `serve` fetches; 0 or off: never in the background
  days: 7                      # closed days each background fetch covers (restatements)
  providers:
    openai: {admin_key_env: OPENAI_ADMIN_KEY, base_url: https://api.openai.com,
             scope: {projects: [proj_abc]}}
    anthropic: {admin_key_env: ANTHROPIC_ADMIN_KEY, base_url: https://api.anthropic.com,
                scope: {workspaces: [wrkspc_01]}}
```

Only the name of the environment variable holding an admin key is configured,
never the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ai_usage_exporter.config.fields import ConfigError, located

PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("OPENAI_ADMIN_KEY", "https://api.openai.com"),
    "anthropic": ("ANTHROPIC_ADMIN_KEY", "https://api.anthropic.com"),
}
# What each provider's reports can be limited to (see reconcile/openai.py, anthropic.py).
SCOPE_KINDS: dict[str, tuple[str, ...]] = {
    "openai": ("projects", "api_keys"),
    "anthropic": ("workspaces",),
}
DEFAULT_INTERVAL = 3600.0
DEFAULT_DAYS = 7


class ReconcileConfigError(ConfigError):
    """The reconcile section is wrong; the message names where and the value."""


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    admin_key_env: str
    base_url: str
    scope: str | None = None  # a word of SCOPE_KINDS, or None: organization-wide
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReconcileSettings:
    interval: float | None = DEFAULT_INTERVAL
    days: int = DEFAULT_DAYS
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)

    def provider(self, name: str) -> ProviderSettings:
        """The configured provider, or its defaults when the section does not name it."""
        found = self.providers.get(name)
        if found is not None:
            return found
        env, url = PROVIDERS[name]
        return ProviderSettings(name, env, url)


def _keys(value: Any, where: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReconcileConfigError(f"{where}: expected a mapping, got {value!r}")
    for k in value:
        if k not in allowed:
            raise ReconcileConfigError(
                f"{where}: unknown key {k!r}; known: {', '.join(sorted(allowed))}"
            )
    return value


def parse_reconcile(value: Any, where: str, duration: Any, source: str = "") -> ReconcileSettings:
    """Read the section; `duration(value, where)` parses `interval` as config.py does."""
    sec = _keys(value, where, ("interval", "days", "providers"))
    out: dict[str, Any] = {}
    if "interval" in sec:
        seconds = duration(sec["interval"], located(source, sec, "interval"))
        out["interval"] = seconds if seconds else None
    if "days" in sec:
        days = sec["days"]
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 180:
            raise ReconcileConfigError(
                f"{located(source, sec, 'days')}: days must be a whole number 1..180, got {days!r}"
            )
        out["days"] = days
    providers: dict[str, ProviderSettings] = {}
    raw = sec.get("providers") or {}
    for name, spec in _keys(raw, located(source, sec, "providers"), tuple(PROVIDERS)).items():
        at = located(source, raw, name)
        spec = _keys(spec or {}, at, ("admin_key_env", "base_url", "scope"))
        env, url = PROVIDERS[name]
        env = spec.get("admin_key_env", env)
        if not isinstance(env, str) or not env.isidentifier():
            raise ReconcileConfigError(
                f"{at}: admin_key_env must name an environment variable (not hold the key), "
                f"got {'a value' if isinstance(env, str) else repr(env)}"
            )
        url = spec.get("base_url", url)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ReconcileConfigError(f"{at}: base_url must be an http(s) URL, got {url!r}")
        scope, ids = None, ()
        if spec.get("scope") is not None:
            kinds = SCOPE_KINDS[name]
            sc = _keys(spec["scope"], at, kinds)
            if len(sc) != 1:
                raise ReconcileConfigError(
                    f"{at}: scope takes one of {', '.join(kinds)}, got {sorted(sc) or 'none'}"
                )
            ((scope, listed),) = sc.items()
            if isinstance(listed, str):
                listed = [listed]
            if (
                not isinstance(listed, list)
                or not listed
                or not all(isinstance(i, str) and i for i in listed)
            ):
                raise ReconcileConfigError(
                    f"{at}: scope.{scope} must be a non-empty list of ids, got {listed!r}"
                )
            ids = tuple(listed)
        providers[name] = ProviderSettings(name, env, url.rstrip("/"), scope, ids)
    out["providers"] = providers
    return ReconcileSettings(**out)
