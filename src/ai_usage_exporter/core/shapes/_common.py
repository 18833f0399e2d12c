"""What every provider mapping shares: the reading it returns and checked counts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

# Token counts of an event; every kind after the first two is a subset of input or output.
TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "cache_write_1h_tokens",
    "image_input_tokens",
    "image_output_tokens",
    # Cache reads of audio, image or video: subsets of both cached_input_tokens and the
    # modality's input count, since some models price a cached audio or image token on its
    # own (and a cached video token must not be taken off the uncached input twice).
    "cached_audio_input_tokens",
    "cached_image_input_tokens",
    "video_input_tokens",
    "video_output_tokens",
    "cached_video_input_tokens",
)
# Counts of billed things that are not tokens.
COUNT_FIELDS: tuple[str, ...] = ("web_search_requests",)
USAGE_FIELDS: tuple[str, ...] = (*TOKEN_FIELDS, *COUNT_FIELDS)
# Each cached-modality kind and the modality count it is also a part of.
CACHED_MODALITIES: dict[str, str] = {
    "cached_audio_input_tokens": "audio_input_tokens",
    "cached_image_input_tokens": "image_input_tokens",
    "cached_video_input_tokens": "video_input_tokens",
}

# Tier names that mean "the ordinary price" at the providers that report a tier.
STANDARD_TIERS = frozenset(("default", "standard", "on_demand", "auto"))


class Invalid(Exception):
    """One bad field; collected into EventError by the caller."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def describe(value: object) -> str:
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(name: str, value: object, max_tokens: int) -> int:
    """A token count given by hand: a non-negative JSON integer within the limit."""
    # bool is an int subclass; `true` as a token count is a client bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            raise Invalid(
                name, f"must be a whole number without a decimal point, got {describe(value)}"
            )
        raise Invalid(name, f"must be a non-negative integer, got {describe(value)}")
    if value < 0:
        raise Invalid(name, f"must be >= 0, got {value}")
    if value > max_tokens:
        raise Invalid(name, f"must be <= {max_tokens}, got {value}")
    return value


@dataclass(slots=True)
class Reading:
    """What a provider's usage object says: counts, and a billed cost or tier if it gives one."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_FIELDS, 0))
    cost_usd: float | None = None  # the provider's own bill for the call
    service_tier: str | None = None
    notes: list[str] = field(default_factory=list)  # what was clamped or inferred, for people


class Counter:
    """Reads counts out of one provider object, naming the field of any bad value."""

    __slots__ = ("where", "max_tokens")

    def __init__(self, where: str, max_tokens: int) -> None:
        self.where = where
        self.max_tokens = max_tokens

    def __call__(self, mapping: Mapping[str, Any], key: str, where: str | None = None) -> int:
        value = mapping.get(key)
        if value is None:
            return 0
        name = f"{where or self.where}.{key}"
        # A provider's own object may spell a count as 12.0 (some SDK dumps do); that is 12.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        return check_int(name, value, self.max_tokens)

    def sub(self, mapping: Mapping[str, Any], key: str) -> tuple[Mapping[str, Any], str]:
        value = mapping.get(key)
        return (value if isinstance(value, Mapping) else {}), f"{self.where}.{key}"

    def modality(self, details: object, where: str, modalities: tuple[str, ...]) -> int:
        """Sum a Gemini-style [{modality, tokenCount}] list over the given modalities."""
        if not isinstance(details, list):
            return 0
        total = 0
        for i, item in enumerate(details):
            if not isinstance(item, Mapping):
                continue
            # SDK dumps may write an enum as "MediaModality.IMAGE".
            name = str(item.get("modality", "")).upper().rsplit(".", 1)[-1]
            if name in modalities:
                key = "tokenCount" if "tokenCount" in item else "token_count"
                total += self(item, key, f"{where}[{i}]")
        return total


def sub(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, Mapping) else {}


def cost_value(value: object) -> float | None:
    """A billed cost a provider reports, or None when it is absent or not a sane number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        return None
    return number


def tier_value(value: object) -> str | None:
    if isinstance(value, Mapping):  # Bedrock: {"type": "flex"}
        value = value.get("type")
    if isinstance(value, str) and value.strip() and len(value) <= 64:
        return value.strip().lower()
    return None


def settle(reading: Reading, where: str) -> Reading:
    """Make the counts consistent without refusing them: subsets never exceed their parent.

    A provider's own object is the truth about what was billed; when a sub-count exceeds
    its parent the parent cannot be lower than it, so the sub-count is cut to fit and the
    cut is noted rather than the call refused.
    """
    c = reading.counts
    inp = c["input_tokens"]
    for name in ("cached_input_tokens", "cache_write_tokens"):
        room = inp - (c["cached_input_tokens"] if name == "cache_write_tokens" else 0)
        if c[name] > room:
            reading.notes.append(f"{where}: {name} {c[name]} cut to {room}")
            c[name] = max(room, 0)
    if c["cache_write_1h_tokens"] > c["cache_write_tokens"]:
        reading.notes.append(f"{where}: cache_write_1h_tokens cut to cache_write_tokens")
        c["cache_write_1h_tokens"] = c["cache_write_tokens"]
    for name in ("audio_input_tokens", "image_input_tokens", "video_input_tokens"):
        if c[name] > inp:
            reading.notes.append(f"{where}: {name} {c[name]} cut to {inp}")
            c[name] = inp
    for name, parent in CACHED_MODALITIES.items():
        room = min(c["cached_input_tokens"], c[parent])
        if c[name] > room:
            reading.notes.append(f"{where}: {name} {c[name]} cut to {room}")
            c[name] = room
    out = c["output_tokens"]
    for name in (
        "reasoning_tokens",
        "audio_output_tokens",
        "image_output_tokens",
        "video_output_tokens",
    ):
        if c[name] > out:
            reading.notes.append(f"{where}: {name} {c[name]} cut to {out}")
            c[name] = out
    return reading
