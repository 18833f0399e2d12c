"""The value readers every config section shares; each error names the setting's file and line."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A setting is wrong; the message names the setting, its source and the value."""


def located(source: str, mapping: Any, key: str) -> str:
    line = getattr(mapping, "key_lines", {}).get(key)
    return f"{source}:{line}" if line else source


def token_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise ConfigError(f"{where}: tokens must be a non-empty string or a list of them")
    return tuple(value)


def as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def as_int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {number}")
    return number
