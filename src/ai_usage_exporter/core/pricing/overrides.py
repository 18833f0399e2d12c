"""The prices file and the config's `prices:` section, read with line numbers.

Errors name the file and line; the parsed overrides and aliases are what
`PriceBook` consults before genai-prices.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ai_usage_exporter.core.pricing.rates import (
    _ALIAS_KEYS,
    _PROVIDER_KEYS,
    _TOP_KEYS,
    RATE_KEYS,
    PriceConfigError,
    Rates,
    _own,
)

# ---------------------------------------------------------------- YAML with line numbers


class _LineDict(dict[Any, Any]):
    """A mapping loaded from YAML that remembers its own line and each key's line."""

    line: int | None = None
    key_lines: dict[Any, int]

    def __init__(self) -> None:
        super().__init__()
        self.key_lines = {}


class LineLoader(yaml.SafeLoader):
    """A SafeLoader whose mappings remember line numbers and reject duplicate keys.

    Load a config with it and pass its `prices:` mapping to `PriceBook` to get
    line-numbered errors: ``yaml.load(f, Loader=LineLoader)``.
    """


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    result = _LineDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, got {key!r}", key_node.start_mark
            ) from None
        if key in result:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {result.key_lines[key]})",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(path: str | os.PathLike[str]) -> Any:
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            return yaml.load(f, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
    except OSError as exc:
        raise PriceConfigError(f"{name}: cannot read the prices file: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise PriceConfigError(f"{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise PriceConfigError(f"{name}: {exc}") from None


# ---------------------------------------------------------------- overrides


@dataclass(frozen=True, slots=True)
class _Override:
    pattern: str  # lower case
    rates: Rates


@dataclass(frozen=True, slots=True)
class _Alias:
    pattern: str  # lower case
    provider: str | None  # None: the event's provider
    model: str
    where: str


@dataclass(slots=True)
class _Section:
    provider: str  # lower case, may be a glob
    overrides: list[_Override] = field(default_factory=list)
    aliases: list[_Alias] = field(default_factory=list)


class _Parser:
    """Validates an overrides mapping into sections, naming the source and line of each problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def where(self, parent: Mapping[Any, Any], key: object = None) -> str:
        line: int | None = None
        if isinstance(parent, _LineDict):
            line = parent.key_lines.get(key, parent.line) if key is not None else parent.line
        return f"{self.source}:{line}" if line is not None else self.source

    def fail(
        self, parent: Mapping[Any, Any], key: object, path: str, message: str
    ) -> PriceConfigError:
        return PriceConfigError(f"{self.where(parent, key)}: {path}: {message}")

    def mapping(self, parent: Mapping[Any, Any], key: object, path: str) -> Mapping[Any, Any]:
        value = parent[key]
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(parent, key, path, f"must be a mapping, got {_kind(value)}")
        return value

    def keys(self, obj: Mapping[Any, Any], allowed: Sequence[str], path: str) -> None:
        for key in obj:
            if key not in allowed:
                raise self.fail(
                    obj,
                    key,
                    f"{path}.{key}" if path else str(key),
                    f"unknown key {key!r}; expected one of {', '.join(allowed)}",
                )

    def name(self, parent: Mapping[Any, Any], key: object, path: str) -> str:
        if not isinstance(key, str) or not key.strip():
            raise self.fail(parent, key, path, f"a name must be non-empty text, got {key!r}")
        return key.strip()

    def parse(self, obj: Mapping[Any, Any]) -> tuple[list[_Section], list[str] | None]:
        if set(obj) == {"prices"} and isinstance(obj["prices"], Mapping):
            obj = obj["prices"]
        self.keys(obj, _TOP_KEYS, "")
        self_hosted: list[str] | None = None
        if "self_hosted" in obj:
            items = obj["self_hosted"]
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                raise self.fail(
                    obj,
                    "self_hosted",
                    "self_hosted",
                    f"must be a list of provider names, got {_kind(items)}",
                )
            self_hosted = [i.strip().lower() for i in items]
        sections: list[_Section] = []
        providers = self.mapping(obj, "providers", "providers") if "providers" in obj else {}
        for provider_key in providers:
            path = f"providers.{provider_key}"
            provider = self.name(providers, provider_key, path)
            body = self.mapping(providers, provider_key, path)
            self.keys(body, _PROVIDER_KEYS, path)
            section = _Section(provider.lower())
            models = self.mapping(body, "models", f"{path}.models") if "models" in body else {}
            for model_key in models:
                mpath = f"{path}.models.{model_key}"
                pattern = self.name(models, model_key, mpath)
                section.overrides.append(
                    _Override(pattern.lower(), self.rates(models, model_key, mpath, pattern))
                )
            aliases = self.mapping(body, "aliases", f"{path}.aliases") if "aliases" in body else {}
            for alias_key in aliases:
                section.aliases.append(
                    self.alias(aliases, alias_key, f"{path}.aliases.{alias_key}")
                )
            sections.append(section)
        return sections, self_hosted

    def rates(self, parent: Mapping[Any, Any], key: object, path: str, pattern: str) -> Rates:
        body = self.mapping(parent, key, path)
        self.keys(body, RATE_KEYS, path)
        values: dict[str, float] = {}
        for name in RATE_KEYS:
            if name not in body:
                continue
            value = body[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                hint = (
                    " (YAML reads 1e-3 as text; write 0.001 or 1.0e-3)"
                    if isinstance(value, str)
                    else ""
                )
                raise self.fail(
                    body,
                    name,
                    f"{path}.{name}",
                    f"must be a number of USD per 1M tokens, got {_kind(value)} {value!r}{hint}",
                )
            if not math.isfinite(value) or value < 0:
                raise self.fail(
                    body, name, f"{path}.{name}", f"must be a finite price >= 0, got {value}"
                )
            values[name] = float(value)
        for required in ("input", "output"):
            if required not in values:
                raise self.fail(parent, key, path, f"needs an {required} price (USD per 1M tokens)")
        return Rates(
            input=values["input"],
            output=values["output"],
            cached_input=values.get("cached_input", values["input"]),
            cache_write=values.get("cache_write", values["input"]),
            reasoning=values.get("reasoning", values["output"]),
            audio_input=values.get("audio_input", values["input"]),
            audio_output=values.get("audio_output", values["output"]),
            cache_write_1h=values.get("cache_write_1h"),
            image_input=values.get("image_input"),
            image_output=values.get("image_output"),
            web_search=values.get("web_search", 0.0) / 1000,
            cached_audio_input=values.get("cached_audio_input"),
            cached_image_input=values.get("cached_image_input"),
            video_input=values.get("video_input"),
            video_output=values.get("video_output"),
            cached_video_input=values.get("cached_video_input"),
            own=_own(values),
            kind="override",
            source=f"override {self.where(parent, key)} ({pattern})",
        )

    def alias(self, parent: Mapping[Any, Any], key: object, path: str) -> _Alias:
        pattern = self.name(parent, key, path)
        target = parent[key]
        provider: str | None = None
        if isinstance(target, Mapping):
            self.keys(target, _ALIAS_KEYS, path)
            model = target.get("model")
            if "provider" in target:
                provider = target["provider"]
                if not isinstance(provider, str) or not provider.strip():
                    raise self.fail(
                        target, "provider", f"{path}.provider", "must be a provider name"
                    )
                provider = provider.strip()
        else:
            model = target
        if not isinstance(model, str) or not model.strip():
            raise self.fail(
                parent,
                key,
                path,
                "must name a model, as `model-name` or {provider: p, model: m}; "
                f"got {_kind(model)}",
            )
        return _Alias(pattern.lower(), provider, model.strip(), self.where(parent, key))


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
