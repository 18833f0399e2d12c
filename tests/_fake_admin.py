"""A local fake of OpenAI's and Anthropic's admin usage and cost APIs.

Shapes, from the providers' documentation and SDK types, and from responses others
recorded against the real APIs:

- OpenAI `GET /v1/organization/costs` and `/v1/organization/usage/{completions,embeddings}`:
  page {object: "page", data: [bucket], has_more, next_page}; bucket {object: "bucket",
  start_time, end_time (unix seconds), results}; costs result {object:
  "organization.costs.result", amount: {value, currency: "usd"}, line_item, project_id,
  quantity}; completions result {input_tokens, input_cached_tokens, output_tokens,
  input_audio_tokens, output_audio_tokens, num_model_requests, model, project_id}.
  Sources: https://platform.openai.com/docs/api-reference/usage/costs and the Python
  SDK reference https://developers.openai.com/api/reference/python/resources/admin/subresources/organization/subresources/usage/
  (DataResultOrganizationCostsResult, DataResultOrganizationUsageCompletionsResult).
  Recorded shapes: amounts as strings (`"value": "2.25"`) and numbers, line items
  `"gpt-4o-mini-2024-07-18, cached input"`, `"priority | gpt-5.6-sol, output, long
  context"`, `"gpt-audio-mini-2025-12-15 audio, input"`, `"web search tool calls"`
  (seen in public test fixtures of cost trackers that captured real responses).
- Anthropic `GET /v1/organizations/usage_report/messages`: page {data: [{starting_at,
  ending_at (RFC 3339), results}], has_more, next_page}; result {model, workspace_id,
  api_key_id, service_tier, context_window, uncached_input_tokens,
  cache_read_input_tokens, cache_creation: {ephemeral_5m_input_tokens,
  ephemeral_1h_input_tokens}, output_tokens, server_tool_use: {web_search_requests}}.
  Source: https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages
  (its example response).
- Anthropic `GET /v1/organizations/cost_report`: result {amount ("cost amount in
  lowest currency units (e.g. cents) as a decimal string. For example, "123.45" in
  "USD" represents $1.23"), currency, cost_type, description, model, service_tier,
  token_type, workspace_id, context_window}. Source:
  https://platform.claude.com/docs/en/api/admin/cost_report.

Every day of the asked range is listed, empty or not; a range reaching into today
ends with a partial bucket (ending at the time of the request), as the real APIs do.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DAY = 86_400


@dataclass
class Raw:
    """A JSON number written exactly as given (e.g. `1.5E-7`), not through a float."""

    text: str


def _dumps(body: Any) -> bytes:
    raws: list[str] = []

    def default(o: Any) -> Any:
        if isinstance(o, Raw):
            raws.append(o.text)
            return f"\x00raw{len(raws) - 1}\x00"
        raise TypeError(type(o).__name__)

    text = json.dumps(body, default=default)
    for i, r in enumerate(raws):
        text = text.replace(f'"\\u0000raw{i}\\u0000"', r)
    return text.encode()


@dataclass
class FakeAdmin:
    openai_key: str = "sk-admin-openai-fake"
    anthropic_key: str = "sk-ant-admin01-fake"
    # day -> endpoint -> results; endpoints: "costs", "completions", "embeddings"
    openai: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    # day -> "usage" | "costs" -> results
    anthropic: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    page_size: int = 2  # buckets per page, so a week takes several pages
    throttle: dict[str, int] = field(default_factory=dict)  # path -> 429s still to send
    retry_after: str = "0.05"
    requests: list[tuple[str, list[tuple[str, str]], float]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/organization/costs", self._openai("costs")),
                Route("/v1/organization/usage/completions", self._openai("completions")),
                Route("/v1/organization/usage/embeddings", self._openai("embeddings")),
                Route("/v1/organizations/usage_report/messages", self._anthropic("usage")),
                Route("/v1/organizations/cost_report", self._anthropic("costs")),
            ]
        )

    def _gate(self, request: Request, ok: bool) -> Response | None:
        self.requests.append(
            (request.url.path, list(request.query_params.multi_items()), time.monotonic())
        )
        left = self.throttle.get(request.url.path, 0)
        if left:
            self.throttle[request.url.path] = left - 1
            return JSONResponse(
                {"error": {"message": "Rate limit exceeded", "type": "rate_limit_error"}},
                status_code=429,
                headers={"retry-after": self.retry_after},
            )
        if not ok:
            return JSONResponse(
                {
                    "error": {
                        "message": "Incorrect API key provided: sk-wron*****-key.",
                        "type": "invalid_request_error",
                    }
                },
                status_code=401,
            )
        return None

    def _openai(self, endpoint: str) -> Any:
        async def handler(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            refused = self._gate(request, auth == f"Bearer {self.openai_key}")
            if refused is not None:
                return refused
            q = request.query_params
            start = int(q["start_time"])
            end = int(q.get("end_time") or time.time())
            buckets = []
            for s, e in _buckets(start, end):
                results = self.openai.get(s, {}).get(endpoint, []) if e == s + DAY else []
                obj = {
                    "costs": "organization.costs.result",
                    "completions": "organization.usage.completions.result",
                    "embeddings": "organization.usage.embeddings.result",
                }[endpoint]
                buckets.append(
                    {
                        "object": "bucket",
                        "start_time": s,
                        "end_time": e,
                        "results": [{"object": obj, **r} for r in results],
                    }
                )
            return self._paged(buckets, q.get("page"), openai_style=True)

        return handler

    def _anthropic(self, endpoint: str) -> Any:
        async def handler(request: Request) -> Response:
            ok = (
                request.headers.get("x-api-key") == self.anthropic_key
                and request.headers.get("anthropic-version") == "2023-06-01"
            )
            refused = self._gate(request, ok)
            if refused is not None:
                return refused
            q = request.query_params
            start = _epoch(q["starting_at"])
            end = _epoch(q["ending_at"]) if q.get("ending_at") else int(time.time())
            buckets = []
            for s, e in _buckets(start, end):
                results = self.anthropic.get(s, {}).get(endpoint, []) if e == s + DAY else []
                buckets.append(
                    {"starting_at": _iso(s), "ending_at": _iso(e), "results": list(results)}
                )
            return self._paged(buckets, q.get("page"), openai_style=False)

        return handler

    def _paged(self, buckets: list[Any], page: str | None, openai_style: bool) -> Response:
        at = int(page.removeprefix("page_")) if page else 0
        chunk = buckets[at : at + self.page_size]
        more = at + self.page_size < len(buckets)
        body: dict[str, Any] = {
            "data": chunk,
            "has_more": more,
            "next_page": f"page_{at + self.page_size}" if more else None,
        }
        if openai_style:
            body = {"object": "page", **body}
        return Response(_dumps(body), media_type="application/json")


def _buckets(start: int, end: int) -> list[tuple[int, int]]:
    now = int(time.time())
    out = []
    s = start - start % DAY
    while s < end:
        e = min(s + DAY, end, now) if s + DAY > now else s + DAY
        if e > s:
            out.append((s, e))
        s += DAY
    return out


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def openai_cost(line_item: str | None, value: Any, project: str | None = None) -> dict[str, Any]:
    return {
        "amount": {"value": value, "currency": "usd"},
        "line_item": line_item,
        "project_id": project,
    }


def openai_usage(model: str, **counts: Any) -> dict[str, Any]:
    return {
        "model": model,
        "project_id": counts.pop("project_id", None),
        "num_model_requests": 1,
        **counts,
    }


def anthropic_cost(
    model: str | None, token_type: str | None, cents: Any, **extra: Any
) -> dict[str, Any]:
    return {
        "amount": cents,
        "currency": "USD",
        "cost_type": extra.pop("cost_type", "tokens"),
        "description": extra.pop("description", f"{model} {token_type}"),
        "model": model,
        "service_tier": "standard",
        "token_type": token_type,
        "workspace_id": extra.pop("workspace_id", None),
        "context_window": "0-200k",
        **extra,
    }


def anthropic_usage(model: str, **counts: Any) -> dict[str, Any]:
    return {
        "model": model,
        "workspace_id": counts.pop("workspace_id", None),
        "api_key_id": None,
        "service_tier": "standard",
        "context_window": "0-200k",
        "uncached_input_tokens": counts.get("uncached", 0),
        "cache_read_input_tokens": counts.get("cache_read", 0),
        "cache_creation": {
            "ephemeral_5m_input_tokens": counts.get("write_5m", 0),
            "ephemeral_1h_input_tokens": counts.get("write_1h", 0),
        },
        "output_tokens": counts.get("output", 0),
        "server_tool_use": {"web_search_requests": counts.get("searches", 0)},
    }
