"""The OpenAPI 3.0 document served at /openapi.json (pure)."""

from __future__ import annotations

from typing import Any

from ai_usage_exporter.core.budgets import BUDGET_FIELDS
from ai_usage_exporter.core.events.model import (
    ATTRIBUTION_FIELDS,
    LEVEL_ALIASES,
    LEVELS,
    STATUSES,
    TOKEN_ALIASES,
    Limits,
)
from ai_usage_exporter.core.reports import FILTERS as REPORT_FILTERS
from ai_usage_exporter.core.reports import REPORTS
from ai_usage_exporter.core.rollup import SCOPES, STEPS
from ai_usage_exporter.core.shapes import STREAM_FORMATS, USAGE_FIELDS
from ai_usage_exporter.core.timeseries import DIMENSIONS, MAX_LIMIT, STATS, UNITS
from ai_usage_exporter.core.version import __version__

_SCOPE = {
    "name": "scope",
    "in": "query",
    "description": "instance (default): this sidecar's rows, the same events as its counters "
    "(on a SQLite ledger, the whole file); fleet: every sidecar sharing the ledger",
    "schema": {"type": "string", "enum": list(SCOPES)},
}


def _event_schema(limits: Limits) -> dict[str, Any]:
    label = {"type": "string", "minLength": 1, "maxLength": limits.max_label_length}
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_string_length}
    count = {"type": "integer", "minimum": 0, "maximum": limits.max_tokens}
    ms = {"type": "number", "minimum": 0, "maximum": limits.max_duration_ms}
    props: dict[str, Any] = {
        "provider": {
            **label,
            "description": "openai, anthropic, azure, bedrock, google, groq, deepseek, ollama, ...",
        },
        "model": label,
        "operation": {**label, "default": "chat"},
        "service": {**label, "default": "default"},
        **{name: count for name in (*USAGE_FIELDS, *TOKEN_ALIASES, "total_tokens")},
        "service_tier": {**label, "description": "default, flex, batch, priority, ..."},
        "provider_cost_usd": {
            "type": "number",
            "minimum": 0,
            "maximum": limits.max_cost_usd,
            "description": "what the provider billed; read from OpenRouter and xAI responses",
        },
        "duration_ms": ms,
        "ttft_ms": ms,
        "status": {"type": "string", "enum": list(STATUSES), "default": "ok"},
        "error_type": label,
        "level": {
            "type": "string",
            "enum": [*LEVELS, *LEVEL_ALIASES],
            "description": "warning is read as warn",
        },
        **{name: text for name in ATTRIBUTION_FIELDS},
        "idempotency_key": label,
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339; default now",
        },
        "cost_usd": {"type": "number", "minimum": 0, "maximum": limits.max_cost_usd},
        "metadata": {
            "type": "object",
            "description": f"at most {limits.max_metadata_bytes} bytes as JSON",
        },
        "prompt_text": {
            "type": "string",
            "description": "stored only when the operator enables it",
        },
        "response_text": {
            "type": "string",
            "description": "stored only when the operator enables it",
        },
        "query_start": {
            "type": "string",
            "format": "date-time",
            "description": "when the user query this call served started (RFC 3339)",
        },
        "query_end": {
            "type": "string",
            "format": "date-time",
            "description": "when that query ended (RFC 3339)",
        },
        "query_duration_ms": {**ms, "description": "that query's duration"},
        "query_text": {
            "type": "string",
            "description": "that query's text; stored only when the operator enables it",
        },
        "usage": {
            "type": "object",
            "description": "a provider's own usage object (OpenAI, Anthropic, Gemini, Bedrock, Ollama)",
        },
        "usageMetadata": {"type": "object", "description": "Gemini's usageMetadata"},
        "response": {
            "type": "object",
            "description": (
                "a provider's whole response body holding its usage (Gemini's"
                " streamGenerateContent JSON array of chunks is also read, as its stream)"
            ),
        },
        "stream": {
            "type": "array",
            "items": {"type": "object"},
            "description": "the decoded events of a streamed call, folded into its usage",
        },
        "stream_format": {"type": "string", "enum": list(STREAM_FORMATS)},
    }
    return {
        "type": "object",
        "required": ["provider", "model"],
        "properties": props,
        "additionalProperties": False,
    }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message"],
                "properties": {
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["index", "field", "message"],
                            "properties": {
                                "index": {"type": "integer"},
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_document(limits: Limits, *, gateway: bool = False) -> dict[str, Any]:
    """The document; with `gateway`, the gateway's routes too (they exist only then)."""
    doc = _core_document(limits)
    doc["paths"].update(_page_paths())
    doc["paths"].update(_otlp_paths())
    if gateway:
        doc["paths"].update(_gateway_paths())
    return doc


def _core_document(limits: Limits) -> dict[str, Any]:
    event_ref = {"$ref": "#/components/schemas/UsageEvent"}
    bearer: list[dict[str, list[str]]] = [{"bearer": []}, {}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "ai-usage-exporter", "version": __version__},
        "paths": {
            "/api/usage": {
                "post": {
                    "summary": "Record usage events; answers once they are committed to the ledger.",
                    "security": bearer,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        event_ref,
                                        {
                                            "type": "array",
                                            "items": event_ref,
                                            "minItems": 1,
                                            "maxItems": limits.max_events_per_request,
                                        },
                                    ]
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "committed",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["accepted", "duplicates"],
                                        "properties": {
                                            "accepted": {"type": "integer", "minimum": 0},
                                            "duplicates": {"type": "integer", "minimum": 0},
                                        },
                                    }
                                }
                            },
                        },
                        "400": _error("malformed JSON"),
                        "401": _error("missing or wrong bearer token"),
                        "413": _error("body too large"),
                        "415": _error("unsupported content type"),
                        "422": _error("an invalid event; nothing was recorded"),
                        "503": _error("the ledger cannot commit now; nothing was recorded"),
                    },
                }
            },
            "/api/metrics": {
                "get": {
                    "summary": "Totals and breakdowns as JSON, or the exposition with format=prometheus.",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "format",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["json", "prometheus"]},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                        },
                        {
                            **_SCOPE,
                            "description": f"{_SCOPE['description']} (with format=prometheus, "
                            "the ai_fleet_* gauges)",
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "the view",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/plain": {"schema": {"type": "string"}},
                            },
                        },
                        "400": _error("bad query parameter"),
                        "401": _error("missing or wrong bearer token"),
                        "503": _error("the ledger cannot be read"),
                    },
                }
            },
            "/api/budget-usage": {
                "get": {
                    "summary": "Tokens, dollars and calls in the ledger since a time, for the SDK's budgets.",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "number"},
                        },
                        _query("field", {"type": "string", "enum": sorted(BUDGET_FIELDS)}),
                        _query("value", {"type": "string"}),
                    ],
                    "responses": {
                        "200": {
                            "description": "the sums",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "400": _error("bad query parameter"),
                        "401": _error("missing or wrong bearer token"),
                        "503": _error("the ledger cannot be read"),
                    },
                }
            },
            "/api/metrics/timeseries": {
                "get": {
                    "summary": "Series per time bucket (minute, hour or day) from the ledger, for charts.",
                    "security": bearer,
                    "parameters": [
                        _query("metric", {"type": "string", "enum": list(UNITS)}),
                        _query("by", {"type": "string", "enum": list(DIMENSIONS)}),
                        _query("step", {"type": "string", "enum": list(STEPS)}),
                        _query("stat", {"type": "string", "enum": list(STATS)}),
                        _query("from", {"type": "string"}),
                        _query("to", {"type": "string"}),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
                        _SCOPE,
                    ],
                    "responses": {
                        "200": {
                            "description": "timestamps (every bucket start) and one value list per series",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "400": _error("bad query parameter"),
                        "401": _error("missing or wrong bearer token"),
                        "503": _error("the ledger cannot be read"),
                    },
                }
            },
            "/api/reports/reconcile": {
                "get": {
                    "summary": "Billed against recorded per closed UTC day, provider and model, "
                    "from the provider bills the sidecar fetched (`reconcile:` in the config).",
                    "security": bearer,
                    "parameters": [
                        _query("days", {"type": "integer", "minimum": 1, "maximum": 400}),
                    ],
                    "responses": {
                        "200": {
                            "description": "rows, totals per provider; `configured` false "
                            "without a reconcile section",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "400": _error("bad query parameter"),
                        "401": _error("missing or wrong bearer token"),
                        "503": _error("the ledger cannot be read"),
                    },
                }
            },
            "/api/reports/{name}": {
                "get": {
                    "summary": "A report (per day, query, agent, model, tenant or service) as JSON or CSV.",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": list(REPORTS)},
                        },
                        _query("since", {"type": "string"}),
                        _query("until", {"type": "string"}),
                        _query("format", {"type": "string", "enum": ["json", "csv"]}),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}),
                        _query("workflow", {"type": "string"}),
                        *(_query(f, {"type": "string"}) for f in REPORT_FILTERS),
                        _SCOPE,
                    ],
                    "responses": {
                        "200": {
                            "description": "the report's rows",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        "400": _error("bad query parameter"),
                        "401": _error("missing or wrong bearer token"),
                        "404": _error("no such report"),
                        "503": _error("the ledger cannot be read"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text exposition (OpenMetrics when the Accept header asks).",
                    "security": bearer,
                    "responses": {
                        "200": {
                            "description": "exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _error("missing or wrong bearer token"),
                    },
                }
            },
            "/metrics/fleet": {
                "get": {
                    "summary": "Fleet-wide totals from the shared ledger as ai_fleet_* gauges.",
                    "security": bearer,
                    "responses": {
                        "200": {
                            "description": "exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _error("missing or wrong bearer token"),
                        "503": _error("the ledger cannot be read"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive.",
                    "responses": {"200": {"description": "alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The ledger takes writes.",
                    "responses": {"200": {"description": "ready"}, "503": _error("not ready")},
                }
            },
            "/api/status": {
                "get": {
                    "summary": "Health for the dashboard: uptime, ledger writable, the writer's "
                    "last error, time since the last event.",
                    "security": bearer,
                    "responses": {
                        "200": {
                            "description": "the status",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "401": _error("missing or wrong bearer token"),
                    },
                }
            },
            "/dashboard": {
                "get": {
                    "summary": "The dashboard page; its data needs the read token.",
                    "responses": {
                        "200": {
                            "description": "the page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {"UsageEvent": _event_schema(limits), "Error": _error_schema()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _page_paths() -> dict[str, Any]:
    return {
        "/": {
            "get": {
                "summary": "Redirects to the dashboard.",
                "responses": {"302": {"description": "to /dashboard"}},
            }
        },
        "/dashboard/{name}": {
            "get": {
                "summary": "The dashboard's script, style sheet and chart library.",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "the file"}, "404": _error("no such file")},
            }
        },
    }


def _otlp_paths() -> dict[str, Any]:
    """OTLP/HTTP: bodies are OTLP's own messages; errors are a google.rpc.Status."""
    security: list[dict[str, list[str]]] = [{"bearer": []}, {}]
    status = {
        "type": "object",
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
    }

    def answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "description": description,
            "content": {
                "application/json": {"schema": schema},
                "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            },
        }

    def post(summary: str, ok: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": security,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-protobuf": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                        "application/json": {"schema": {"type": "object"}},
                    },
                },
                "responses": {
                    "200": answer(ok, {"type": "object"}),
                    "400": answer("the body is not a valid OTLP message", status),
                    "401": _error("missing or wrong bearer token"),
                    "413": answer("the body, or its GenAI calls, exceed the limits", status),
                    "415": answer("another content type or encoding", status),
                    "503": answer("the ledger is unavailable; retry after Retry-After", status),
                },
            }
        }

    return {
        "/v1/traces": post(
            "OTLP trace export: each GenAI inference span becomes one usage event.",
            "committed; partialSuccess names any refused span",
        ),
        "/v1/metrics": post(
            "OTLP metrics export: answered, not stored (partialSuccess says why).",
            "every data point rejected in partialSuccess",
        ),
        "/v1/logs": post(
            "OTLP logs export: answered, not stored (partialSuccess says why).",
            "every log record rejected in partialSuccess",
        ),
    }


def _gateway_paths() -> dict[str, Any]:
    """OpenAI-compatible routes; bodies pass through, so their schemas are OpenAI's own."""
    security: list[dict[str, list[str]]] = [{"bearer": []}, {}]
    route = {"name": "route", "in": "path", "required": True, "schema": {"type": "string"}}

    def post(summary: str, named: bool) -> dict[str, Any]:
        op: dict[str, Any] = {
            "summary": summary,
            "security": security,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": {
                    "description": "the upstream's answer, as it sent it (JSON, or an SSE stream)"
                },
                "401": _error(
                    "missing or wrong client token or gateway key, or the key is revoked or "
                    "expired (`code` unauthorized or expired)"
                ),
                "403": _error("the key may not use this route or model"),
                "404": _error("no such route"),
                "429": _error(
                    "the key's budget is used up (`code` budget, with `used`, `limit`, "
                    "`resets_at`) or it is over its RPM/TPM (`code` rate_limit); see Retry-After"
                ),
                "502": _error("every upstream failed; `attempts` names each failure"),
                "503": _error("the shared rate limiter is down and configured to fail closed"),
            },
        }
        if named:
            op["parameters"] = [route]
        return {"post": op}

    paths: dict[str, Any] = {
        "/v1/chat/completions": post("Chat Completions, to the default route.", False),
        "/v1/responses": post("Responses API, to the default route.", False),
        "/v1/embeddings": post("Embeddings, to the default route.", False),
        "/v1/models": {
            "get": {
                "summary": "Models of the default route (models_endpoint: proxy or aggregate).",
                "security": security,
                "responses": {
                    "200": {"description": "an OpenAI model list"},
                    "401": _error("missing or wrong client token or gateway key"),
                },
            }
        },
        "/api/ai/{route}": post("A chat body to a named route.", True),
    }
    for suffix, what in (
        ("chat/completions", "Chat Completions"),
        ("responses", "Responses API"),
        ("embeddings", "Embeddings"),
    ):
        paths[f"/api/ai/{{route}}/{suffix}"] = post(f"{what}, to a named route.", True)
    # The native APIs: Anthropic's Messages and Gemini's generateContent, as their SDKs
    # send them (client token as x-api-key, x-goog-api-key or ?key= as well as Bearer).
    target = {
        "name": "target",
        "in": "path",
        "required": True,
        "description": "`{model}:{method}`: generateContent, streamGenerateContent, countTokens",
        "schema": {"type": "string"},
    }
    for prefix, named in (("", False), ("/api/ai/{route}", True)):
        where = "a named route" if named else "the API's default route"
        paths[f"{prefix}/v1/messages"] = post(f"Anthropic Messages, to {where}.", named)
        paths[f"{prefix}/v1/messages/count_tokens"] = post(
            f"Anthropic token counting, to {where} (not recorded).", named
        )
        for version in ("v1beta", "v1"):
            op = post(f"Gemini generateContent and its kin, to {where}.", named)
            op["post"]["parameters"] = [*op["post"].get("parameters", []), target]
            paths[f"{prefix}/{version}/models/{{target}}"] = op
    return paths


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema}
