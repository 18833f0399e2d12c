"""Settings from flags, environment (AI_USAGE_EXPORTER_*) and a YAML file, in that precedence."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml

from ai_usage_exporter.config.fields import ConfigError, as_bool, as_int, located, token_list
from ai_usage_exporter.config.gateway import GatewayConfig, parse_gateway
from ai_usage_exporter.core.budgets import BudgetConfigError, BudgetSpec, parse_budgets
from ai_usage_exporter.core.events.model import Limits
from ai_usage_exporter.core.metrics import DEFAULT_LABEL_CAPS, OPTIONAL_LABELS
from ai_usage_exporter.core.pricing.overrides import LineLoader
from ai_usage_exporter.core.rollup import check_instance

DEFAULT_PORT = 9478
DEFAULT_HOST = "127.0.0.1"
DEFAULT_DB = "ai-usage.db"
ENV_PREFIX = "AI_USAGE_EXPORTER_"
SYNCHRONOUS = ("full", "normal")
# The words --log-level takes; `warn` is read as `warning`, as the event's level is.
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_ALIASES = {"warn": "warning"}
# Settings that may come from a file instead, as container secrets do:
# AI_USAGE_EXPORTER_WRITE_TOKEN_FILE=/run/secrets/write_token.
SECRET_ENV = {"WRITE_TOKEN": "write_tokens", "READ_TOKEN": "read_tokens"}


@dataclass(frozen=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db: str = DEFAULT_DB
    config: str | None = None
    prices_file: str | None = None
    prices: Mapping[str, Any] | None = None  # the config file's `prices:` section
    write_tokens: tuple[str, ...] = ()
    read_tokens: tuple[str, ...] = ()
    allow_unauthenticated: bool = False
    extra_labels: tuple[str, ...] = ()
    label_caps: Mapping[str, int] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    store_text: bool = False
    synchronous: str = "full"
    log_level: str = "info"
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    instance: str | None = None  # None: default_instance() when the sidecar starts
    budgets: tuple[BudgetSpec, ...] = ()
    # Seconds; None keeps events forever. Retention never changes a total (see `cli.commands.prune`).
    retention: float | None = None
    minute_retention: float | None = 7 * 86400.0
    hour_retention: float | None = 400 * 86400.0
    usage_log: str | None = None
    usage_log_max_bytes: int = 100 * 1024 * 1024
    usage_log_backups: int = 5
    gateway: GatewayConfig | None = None  # the config file's `gateway:` section
    # Tokens for the gateway's routes; from gateway.client_tokens or the environment.
    gateway_tokens: tuple[str, ...] = ()


# Keys of the YAML file; nested sections are handled by name below.
_FILE_KEYS = {
    "host", "port", "db", "prices_file", "prices", "auth", "labels", "limits",
    "store_text", "synchronous", "log_level", "tls", "allow_unauthenticated", "instance", "budgets",
    "retention", "timeseries", "usage_log", "gateway",
}  # fmt: skip
_LIMIT_KEYS = {f.name for f in fields(Limits)}


def load_file(path: str) -> dict[str, Any]:
    """Read the YAML config into Settings fields; errors name the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(f"{path}:{mark.line + 1 if mark else '?'}: {exc.problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of settings")
    out: dict[str, Any] = {"config": path}
    for key, value in data.items():
        where = located(path, data, key)
        if key not in _FILE_KEYS:
            raise ConfigError(
                f"{where}: unknown setting {key!r}; known: {', '.join(sorted(_FILE_KEYS))}"
            )
        if key == "synchronous":
            out[key] = _synchronous(value, where)
        elif key in ("host", "db", "prices_file", "log_level", "instance"):
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
            if key == "log_level":
                value = _log_level(value, where)
            out[key] = value
        elif key == "port":
            out["port"] = as_int(value, where, 0)
        elif key in ("store_text", "allow_unauthenticated"):
            out[key] = as_bool(value, where)
        elif key == "prices":
            out["prices"] = value
        elif key == "auth":
            for k, v in _section(value, where, {"write_tokens", "read_tokens"}).items():
                out[k] = token_list(v, located(path, value, k))
        elif key == "tls":
            for k, v in _section(value, where, {"keyfile", "certfile"}).items():
                out[f"ssl_{k}"] = str(v)
        elif key == "labels":
            sec = _section(value, where, {"extra", "caps"})
            if "extra" in sec:
                out["extra_labels"] = _extra_labels(sec["extra"], located(path, value, "extra"))
            if "caps" in sec:
                caps = _section(sec["caps"], located(path, value, "caps"), set(DEFAULT_LABEL_CAPS))
                out["label_caps"] = {
                    k: as_int(v, located(path, sec["caps"], k), 1) for k, v in caps.items()
                }
        elif key == "budgets":
            try:
                out["budgets"] = parse_budgets(value, where)
            except BudgetConfigError as exc:
                raise ConfigError(str(exc)) from None
        elif key == "limits":
            sec = _section(value, where, _LIMIT_KEYS)
            out["limits"] = {k: v for k, v in sec.items()}
        elif key == "retention":
            out["retention"] = _duration(value, where)
        elif key == "timeseries":
            sec = _section(value, where, {"minute_retention", "hour_retention"})
            for k, v in sec.items():
                out[k] = _duration(v, located(path, value, k))
        elif key == "usage_log":
            if isinstance(value, str):
                value = {"path": value}
            sec = _section(value, where, {"path", "max_bytes", "backups"})
            if not isinstance(sec.get("path"), str):
                raise ConfigError(f"{where}: usage_log needs a path, got {value!r}")
            out["usage_log"] = sec["path"]
            if "max_bytes" in sec:
                out["usage_log_max_bytes"] = as_int(
                    sec["max_bytes"], located(path, value, "max_bytes"), 1024
                )
            if "backups" in sec:
                out["usage_log_backups"] = as_int(
                    sec["backups"], located(path, value, "backups"), 0
                )
        elif key == "gateway":
            out["gateway"] = parse_gateway(value, where)
            if out["gateway"].client_tokens:
                out["gateway_tokens"] = out["gateway"].client_tokens
    return out


def _duration(value: Any, where: str) -> float | None:
    from ai_usage_exporter.core.timeseries import ParamError, parse_duration

    # YAML 1.1 reads an unquoted `off` as false: it means "keep forever" like "off".
    if value is None or value is False or value in ("forever", "off"):
        return None
    try:
        return parse_duration("duration", value)
    except ParamError:
        raise ConfigError(
            f"{where}: expected a duration such as 90d, 12h or 2w, got {value!r}"
        ) from None


def _section(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    for k in value:
        if k not in allowed:
            raise ConfigError(
                f"{located(where.split(':')[0], value, k)}: unknown key {k!r}; known: {', '.join(sorted(allowed))}"
            )
    return value


def _extra_labels(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of label names, got {value!r}")
    for name in value:
        if name not in OPTIONAL_LABELS:
            raise ConfigError(
                f"{where}: {name!r} cannot be a Prometheus label; choose from {', '.join(OPTIONAL_LABELS)}"
            )
    return tuple(value)


def _synchronous(value: object, where: str) -> str:
    if isinstance(value, str) and value in SYNCHRONOUS:
        return value
    # YAML 1.1 reads an unquoted off/no as false; SQLite's own OFF is not offered.
    note = " (YAML reads an unquoted off, no or false as false)" if isinstance(value, bool) else ""
    raise ConfigError(
        f"{where}: synchronous must be full (fsync each commit: survives power loss) or "
        f"normal (survives a crash of the process), got {value!r}{note}"
    )


def _log_level(value: str, where: str) -> str:
    level = LOG_LEVEL_ALIASES.get(value.lower(), value.lower())
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"{where}: log level must be one of {', '.join(LOG_LEVELS)} (or warn), got {value!r}"
        )
    return level


def _secret_file(path: str, name: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise ConfigError(
            f"{name}={path}: cannot read the token file: {exc.strerror}; "
            "mount the secret there or unset the variable"
        ) from None


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def get(name: str) -> str | None:
        return environ.get(ENV_PREFIX + name)

    for name in ("HOST", "DB", "CONFIG", "INSTANCE"):
        if get(name):
            out[name.lower()] = get(name)
    if get("LOG_LEVEL"):
        out["log_level"] = _log_level(str(get("LOG_LEVEL")), f"{ENV_PREFIX}LOG_LEVEL")
    if get("SYNCHRONOUS"):
        out["synchronous"] = _synchronous(str(get("SYNCHRONOUS")), f"{ENV_PREFIX}SYNCHRONOUS")
    if get("PRICES"):
        out["prices_file"] = get("PRICES")
    if get("PORT"):
        out["port"] = as_int(get("PORT"), f"{ENV_PREFIX}PORT")
    for name, key in SECRET_ENV.items():
        value = get(name)
        file_path = get(f"{name}_FILE")
        if value and file_path:
            raise ConfigError(
                f"both {ENV_PREFIX}{name} and {ENV_PREFIX}{name}_FILE are set; keep one"
            )
        if file_path:
            value = _secret_file(file_path, f"{ENV_PREFIX}{name}_FILE")
        if value:
            out[key] = tuple(t.strip() for t in value.split(",") if t.strip())
    for name in ("GATEWAY_TOKENS", "GATEWAY_TOKEN"):
        if get(name):
            out["gateway_tokens"] = tuple(t.strip() for t in str(get(name)).split(",") if t.strip())
            break
    for name in ("ALLOW_UNAUTHENTICATED", "STORE_TEXT"):
        if get(name):
            out[name.lower()] = as_bool(get(name), ENV_PREFIX + name)
    if get("EXTRA_LABELS"):
        out["extra_labels"] = _extra_labels(get("EXTRA_LABELS"), f"{ENV_PREFIX}EXTRA_LABELS")
    if get("SSL_KEYFILE"):
        out["ssl_keyfile"] = get("SSL_KEYFILE")
    if get("SSL_CERTFILE"):
        out["ssl_certfile"] = get("SSL_CERTFILE")
    return out


def resolve(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Flags beat environment, which beats the config file, which beats defaults."""
    env = from_env(os.environ if environ is None else environ)
    config_path = flags.get("config") or env.get("config")
    merged: dict[str, Any] = {}
    if config_path:
        merged.update(load_file(config_path))
    merged.update(env)
    merged.update({k: v for k, v in flags.items() if v is not None})
    limits = merged.pop("limits", None)
    settings = Settings(**merged)
    if isinstance(limits, dict):
        try:
            settings = replace(settings, limits=Limits(**limits))
        except TypeError as exc:
            raise ConfigError(f"{config_path}: limits: {exc}") from None
    elif isinstance(limits, Limits):
        settings = replace(settings, limits=limits)
    _synchronous(settings.synchronous, "settings")
    settings = replace(settings, log_level=_log_level(settings.log_level, "--log-level"))
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"port must be 0..65535, got {settings.port}")
    if settings.instance is not None:
        try:
            check_instance(settings.instance)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return settings


def default_instance(environ: Mapping[str, str] | None = None) -> str:
    """The sidecar's name when none is set: the pod name in Kubernetes, else the host name.

    Kubernetes sets HOSTNAME to the pod name; POD_NAME is the conventional variable a
    manifest fills from the downward API (metadata.name) and wins when present.
    """
    env = os.environ if environ is None else environ
    for name in ("POD_NAME", "HOSTNAME"):
        value = env.get(name, "").strip()
        if value:
            return value
    return socket.gethostname()


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
