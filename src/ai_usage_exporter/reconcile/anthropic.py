"""Anthropic's Admin API reports: what was billed, per day, model and kind.

`GET /v1/organizations/usage_report/messages` (group_by[]=model) gives the tokens:
uncached input, cache reads, 5-minute and 1-hour cache writes, output, and
server-tool requests. `GET /v1/organizations/cost_report` (group_by[]=description)
gives the money, in cents as decimal strings ("123.45" is $1.2345), per model and
token type. Both take RFC 3339 bounds, 1-day buckets and cursor pages (has_more,
next_page). See https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages
and https://platform.claude.com/docs/en/api/admin/cost_report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ai_usage_exporter.reconcile._parse import (
    DAY,
    Fetched,
    Page,
    ShapeError,
    Tally,
    count,
    finish,
    mapping,
    money,
    nanodollars,
    page,
    pages,
    rfc3339,
)
from ai_usage_exporter.reconcile.client import AdminClient

PROVIDER = "anthropic"
USAGE = "/v1/organizations/usage_report/messages"
COSTS = "/v1/organizations/cost_report"
VERSION = "2023-06-01"
# The cost report can be grouped by workspace but not by API key, so only
# workspaces can limit both sides alike.
SCOPES: dict[str, tuple[str, str]] = {"workspaces": ("workspace_ids", "workspace_id")}
DEFAULT_WORKSPACE = "default"  # the workspace whose id the reports give as null

_TOKEN_TYPES: dict[str, str] = {
    "uncached_input_tokens": "uncached_input",
    "cache_read_input_tokens": "cached_input",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write_5m",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h",
    "output_tokens": "output",
}
_CENTS = Decimal(100)


def auth_headers(key: str) -> Mapping[str, str]:
    return {"x-api-key": key, "anthropic-version": VERSION}


def report_page(body: Any) -> Page:
    return page(body, "anthropic report", "starting_at", "ending_at")


def _scope_of(r: Mapping[str, Any], scope: str | None) -> str:
    if scope is None:
        return ""
    return f"workspace:{r.get('workspace_id') or DEFAULT_WORKSPACE}"


def cost_kind(r: Mapping[str, Any]) -> str:
    cost_type = r.get("cost_type")
    if cost_type == "web_search":
        return "web_search"
    if cost_type not in (None, "tokens"):
        return "other"
    return _TOKEN_TYPES.get(str(r.get("token_type")), "other")


def add_costs(tally: Tally, p: Page, scope: str | None, wanted: set[str], window: range) -> None:
    for start, _end, results in p.days(window):
        tally.cost_days.add(start)
        for j, r in enumerate(results):
            s = _scope_of(r, scope)
            if s not in wanted:
                continue
            at = f"anthropic cost_report bucket {rfc3339(start)} result {j}"
            currency = str(r.get("currency") or "USD").upper()
            if currency != "USD":
                raise ShapeError(f"{at}: currency {currency!r} is not USD")
            cents = money(r.get("amount"), f"{at}: amount")
            kind = cost_kind(r)
            model = str(r.get("model") or "")
            tally.add_cost((start, s, model, kind), nanodollars(cents / _CENTS))


def add_usage(tally: Tally, p: Page, scope: str | None, wanted: set[str], window: range) -> None:
    seen = tally.usage_days.setdefault(USAGE, set())
    for start, _end, results in p.days(window):
        seen.add(start)
        for j, r in enumerate(results):
            s = _scope_of(r, scope)
            if s not in wanted:
                continue
            at = f"anthropic usage_report bucket {rfc3339(start)} result {j}"
            key = (start, s, str(r.get("model") or ""))
            creation = r.get("cache_creation")
            creation = mapping(creation, f"{at}: cache_creation") if creation is not None else {}
            # Some responses flatten cache_creation into two top-level counts.
            w5 = creation.get("ephemeral_5m_input_tokens", r.get("cache_creation_5m_input_tokens"))
            w1 = creation.get("ephemeral_1h_input_tokens", r.get("cache_creation_1h_input_tokens"))
            tools = r.get("server_tool_use")
            tools = mapping(tools, f"{at}: server_tool_use") if tools is not None else {}
            tally.add_quantity(
                (*key, "uncached_input"),
                count(r.get("uncached_input_tokens"), f"{at}: uncached_input_tokens"),
            )
            tally.add_quantity(
                (*key, "cached_input"),
                count(r.get("cache_read_input_tokens"), f"{at}: cache_read_input_tokens"),
            )
            tally.add_quantity(
                (*key, "cache_write_5m"), count(w5, f"{at}: ephemeral_5m_input_tokens")
            )
            tally.add_quantity(
                (*key, "cache_write_1h"), count(w1, f"{at}: ephemeral_1h_input_tokens")
            )
            tally.add_quantity(
                (*key, "output"), count(r.get("output_tokens"), f"{at}: output_tokens")
            )
            tally.add_quantity(
                (*key, "web_search"),
                count(tools.get("web_search_requests"), f"{at}: web_search_requests"),
            )


def fetch(
    client: AdminClient,
    since: int,
    until: int,
    now: float,
    scope: str | None = None,
    ids: Sequence[str] = (),
) -> Fetched:
    """Token usage and costs of the whole UTC days in [since, until)."""
    window = range(since, until, DAY)
    days = min(31, max(1, len(window)))
    common = [
        ("starting_at", rfc3339(since)),
        ("ending_at", rfc3339(until)),
        ("bucket_width", "1d"),
        ("limit", str(days)),
    ]
    wanted = {""}
    group: list[tuple[str, str]] = []
    usage_filter: list[tuple[str, str]] = []
    if scope is not None:
        group = [("group_by[]", "workspace_id")]
        # The default workspace has no id to filter by: it is picked out client-side.
        usage_filter = [("workspace_ids[]", i) for i in ids if i != DEFAULT_WORKSPACE]
        if DEFAULT_WORKSPACE in ids:
            usage_filter = []
        wanted = {f"workspace:{i}" for i in ids}
    tally = Tally(PROVIDER)
    for p in pages(
        client, USAGE, [*common, ("group_by[]", "model"), *group, *usage_filter], report_page
    ):
        add_usage(tally, p, scope, wanted, window)
    for p in pages(client, COSTS, [*common, ("group_by[]", "description"), *group], report_page):
        add_costs(tally, p, scope, wanted, window)
    return finish(tally, tuple(sorted(wanted)), now, client.requests)
