"""OpenAI's organization Costs and Usage APIs: what was billed, per day, model and kind.

`GET /v1/organization/costs` (group_by line_item) gives the dollars; a line item
names the model and the kind of token, e.g. `gpt-4o-2024-08-06, input`,
`gpt-4o-mini-2024-07-18, cached input`, `priority | gpt-5, output, long context`,
`gpt-audio-mini-2025-12-15 audio, input`, or a charge with no model such as
`web search tool calls`. `GET /v1/organization/usage/completions` and
`/embeddings` (group_by model) give the tokens. Both take unix seconds, 1-day
buckets and cursor pages (has_more, next_page). See the API reference at
https://platform.openai.com/docs/api-reference/usage and the SDK types
(openai-python, `admin.organization.usage`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ai_usage_exporter.reconcile._parse import (
    DAY,
    Fetched,
    Page,
    ShapeError,
    Tally,
    count,
    finish,
    money,
    nanodollars,
    page,
    pages,
)
from ai_usage_exporter.reconcile.client import AdminClient

PROVIDER = "openai"
COSTS = "/v1/organization/costs"
USAGE = ("/v1/organization/usage/completions", "/v1/organization/usage/embeddings")
# Scope kinds this API can be limited to: config word -> (filter parameter, group_by field).
SCOPES: dict[str, tuple[str, str]] = {
    "projects": ("project_ids", "project_id"),
    "api_keys": ("api_key_ids", "api_key_id"),
}
_SCOPE_PREFIX = {"projects": "project", "api_keys": "api_key"}

# "[tier | ]model[ modality], piece[, qualifier...]"
_LINE = re.compile(
    r"^(?:(?P<tier>[\w.-]+)\s*\|\s*)?(?P<head>[^,]+?)\s*(?:,\s*(?P<piece>[^,]+?)\s*(?:,.*)?)?$"
)
_PIECES: dict[str, str] = {
    "input": "input",
    "input tokens": "input",
    "cached input": "cached_input",
    "cached input tokens": "cached_input",
    "output": "output",
    "output tokens": "output",
    "cache write": "cache_write",
    "cache writes": "cache_write",
}
# (modality, piece) -> billing kind; text is the default modality.
_KINDS: dict[tuple[str, str], str] = {
    ("text", "input"): "uncached_input",
    ("text", "cached_input"): "cached_input",
    ("text", "output"): "output",
    ("text", "cache_write"): "cache_write_5m",
    ("audio", "input"): "audio_input",
    ("audio", "cached_input"): "cached_input",
    ("audio", "output"): "audio_output",
    ("image", "input"): "image_input",
    ("image", "cached_input"): "cached_input",
    ("image", "output"): "image_output",
}


def auth_headers(key: str) -> Mapping[str, str]:
    return {"Authorization": f"Bearer {key}"}


def line_item(text: str | None) -> tuple[str, str]:
    """(model, billing kind) of a cost line item; ("", kind) for a charge with no model.

    A tier prefix (`batch | `, `priority | `) and trailing qualifiers (`, long
    context`) are dropped: the ledger's day buckets do not keep the tier either.
    """
    if not text:
        return "", "other"
    m = _LINE.match(text.strip())
    if m is None:
        return "", "other"
    head, piece = m["head"], m["piece"]
    if piece is None:
        return "", "web_search" if "web search" in head.lower() else "other"
    words = head.split()
    model, modality = words[0], (words[1].lower() if len(words) > 1 else "text")
    kind = _KINDS.get((modality, _PIECES.get(piece.lower(), "")))
    return model, kind or "other"


def costs_page(body: Any) -> Page:
    return page(body, "openai costs", "start_time", "end_time")


def usage_page(body: Any) -> Page:
    return page(body, "openai usage", "start_time", "end_time")


def _scope_of(r: Mapping[str, Any], scope: str | None) -> str:
    if scope is None:
        return ""
    value = r.get(SCOPES[scope][1])
    return f"{_SCOPE_PREFIX[scope]}:{value}"


def add_costs(tally: Tally, p: Page, scope: str | None, wanted: set[str], window: range) -> None:
    """Add a costs page's amounts (whole-day buckets inside the window) to the tally."""
    for start, _end, results in p.days(window):
        tally.cost_days.add(start)
        for j, r in enumerate(results):
            s = _scope_of(r, scope)
            if s not in wanted:
                continue
            at = f"openai costs bucket {start} result {j}"
            amount = r.get("amount")
            # Both are optional in the SDK's types: no amount is nothing billed.
            if amount is None:
                continue
            if not isinstance(amount, Mapping):
                raise ShapeError(f"{at}: amount: expected an object, got {amount!r}")
            currency = str(amount.get("currency") or "usd").lower()
            if currency != "usd":
                raise ShapeError(f"{at}: amount.currency {currency!r} is not usd")
            if amount.get("value") is None:
                continue
            usd = money(
                amount.get("value"), f"openai costs bucket {start} result {j}: amount.value"
            )
            model, kind = line_item(r.get("line_item"))
            tally.add_cost((start, s, model, kind), nanodollars(usd))


def add_usage(
    tally: Tally, endpoint: str, p: Page, scope: str | None, wanted: set[str], window: range
) -> None:
    """Add a usage page's tokens (whole-day buckets inside the window) to the tally."""
    seen = tally.usage_days.setdefault(endpoint, set())
    for start, _end, results in p.days(window):
        seen.add(start)
        for j, r in enumerate(results):
            s = _scope_of(r, scope)
            if s not in wanted:
                continue
            at = f"openai usage bucket {start} result {j}"
            model = str(r.get("model") or "")
            inp = count(r.get("input_tokens"), f"{at}: input_tokens")
            cached = count(r.get("input_cached_tokens"), f"{at}: input_cached_tokens")
            key = (start, s, model)
            tally.add_quantity((*key, "uncached_input"), max(0, inp - cached))
            tally.add_quantity((*key, "cached_input"), cached)
            tally.add_quantity((*key, "audio_input"), count(r.get("input_audio_tokens"), at))
            tally.add_quantity((*key, "output"), count(r.get("output_tokens"), at))
            tally.add_quantity((*key, "audio_output"), count(r.get("output_audio_tokens"), at))


def fetch(
    client: AdminClient,
    since: int,
    until: int,
    now: float,
    scope: str | None = None,
    ids: Sequence[str] = (),
) -> Fetched:
    """Costs and token usage of the whole UTC days in [since, until)."""
    window = range(since, until, DAY)
    common: list[tuple[str, str]] = [
        ("start_time", str(since)),
        ("end_time", str(until)),
        ("bucket_width", "1d"),
    ]
    group: list[tuple[str, str]] = []
    wanted = {""}
    if scope is not None:
        param, field = SCOPES[scope]
        common += [(f"{param}[]", i) for i in ids]
        group = [("group_by[]", field)]
        wanted = {f"{_SCOPE_PREFIX[scope]}:{i}" for i in ids}
    tally = Tally(PROVIDER)
    days = len(window)
    for p in pages(
        client,
        COSTS,
        [*common, ("limit", str(min(180, max(1, days)))), ("group_by[]", "line_item"), *group],
        costs_page,
    ):
        add_costs(tally, p, scope, wanted, window)
    for endpoint in USAGE:
        for p in pages(
            client,
            endpoint,
            [*common, ("limit", str(min(31, max(1, days)))), ("group_by[]", "model"), *group],
            usage_page,
        ):
            add_usage(tally, endpoint, p, scope, wanted, window)
    return finish(tally, tuple(sorted(wanted)), now, client.requests)
