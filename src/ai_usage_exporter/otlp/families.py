"""One small table per instrumentation family: which attribute means which count.

Each family was read from the instrumentation's own code (see
tests/fixtures/otlp/SOURCES.md). What differs between them, besides names, is whether
the input count already holds the cache reads and writes: our convention is that it
does, so a family that reports them beside the input has them added back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Our count field -> the attributes that carry it, the first one present wins.
TokenTable = tuple[tuple[str, tuple[str, ...]], ...]

# Whether a family's input count holds the cache: always, never, or as the provider's
# own API reports it (Anthropic's `input_tokens` leaves the cache out).
WITH_CACHE = "included"
WITHOUT_CACHE = "excluded"
AS_PROVIDER = "as the provider reports it"

SEMCONV_TOKENS: TokenTable = (
    ("input_tokens", ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")),
    ("output_tokens", ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")),
    (
        "cached_input_tokens",
        (
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
            "gen_ai.usage.details.cache_read_tokens",
            # Spellings hand-made instrumentations use (LiveKit Agents writes the second
            # beside the registry's name, for the backends that read it).
            "gen_ai.usage.cached_tokens",
            "gen_ai.usage.input_cached_tokens",
            "gen_ai.usage.cached_input_tokens",
            "gen_ai.usage.cache_read_tokens",
        ),
    ),
    (
        "cache_write_tokens",
        (
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.cache_write.input_tokens",
            "gen_ai.usage.cache_creation_input_tokens",
            "gen_ai.usage.details.cache_write_tokens",
            "gen_ai.usage.cache_write_input_tokens",
            "gen_ai.usage.cache_write_tokens",
        ),
    ),
    (
        "reasoning_tokens",
        (
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.reasoning_tokens",
            "gen_ai.usage.details.reasoning_tokens",
        ),
    ),
    ("audio_input_tokens", ("gen_ai.usage.details.input_audio_tokens",)),
    ("audio_output_tokens", ("gen_ai.usage.details.output_audio_tokens",)),
    ("cached_audio_input_tokens", ("gen_ai.usage.details.cache_audio_read_tokens",)),
)

OPENLLMETRY_TOKENS: TokenTable = (
    *SEMCONV_TOKENS[:4],
    (
        "reasoning_tokens",
        (
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.reasoning_tokens",
            "llm.usage.reasoning_tokens",
        ),
    ),
)

OPENINFERENCE_TOKENS: TokenTable = (
    ("input_tokens", ("llm.token_count.prompt",)),
    ("output_tokens", ("llm.token_count.completion",)),
    ("cached_input_tokens", ("llm.token_count.prompt_details.cache_read",)),
    ("cache_write_tokens", ("llm.token_count.prompt_details.cache_write",)),
    ("reasoning_tokens", ("llm.token_count.completion_details.reasoning",)),
    ("audio_input_tokens", ("llm.token_count.prompt_details.audio",)),
    ("audio_output_tokens", ("llm.token_count.completion_details.audio",)),
)

# AI SDK 4 to 6 name the counts promptTokens/completionTokens; 7 inputTokens/outputTokens
# with details. Embedding spans carry `ai.usage.tokens`.
VERCEL_TOKENS: TokenTable = (
    (
        "input_tokens",
        (
            "ai.usage.inputTokens",
            "ai.usage.promptTokens",
            "ai.usage.tokens",
            "gen_ai.usage.input_tokens",
        ),
    ),
    (
        "output_tokens",
        ("ai.usage.outputTokens", "ai.usage.completionTokens", "gen_ai.usage.output_tokens"),
    ),
    (
        "cached_input_tokens",
        (
            "ai.usage.inputTokenDetails.cacheReadTokens",
            "ai.usage.cachedInputTokens",
            "gen_ai.usage.cache_read.input_tokens",
        ),
    ),
    ("cache_write_tokens", ("ai.usage.inputTokenDetails.cacheWriteTokens",)),
    (
        "reasoning_tokens",
        ("ai.usage.outputTokenDetails.reasoningTokens", "ai.usage.reasoningTokens"),
    ),
)

SEMCONV_COST = ("gen_ai.usage.cost",)


@dataclass(frozen=True, slots=True)
class Family:
    """How one instrumentation family writes a call's usage on its spans."""

    name: str
    title: str
    tokens: TokenTable
    input_cache: str
    cost: tuple[str, ...] = ()
    # Extra counts only this family can read (JSON-encoded provider metadata, ...).
    extra: Callable[[Mapping[str, Any], dict[str, int], str], None] | None = None
    # attribute -> (our field, its rank among that field's names): a span is read by
    # walking its own attributes once, not by probing every name of the table.
    index: Mapping[str, tuple[str, int]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[str, tuple[str, int]] = {}
        for ours, names in self.tokens:
            for rank, name in enumerate(names):
                index.setdefault(name, (ours, rank))
        object.__setattr__(self, "index", index)


def _vercel_provider_metadata(
    attrs: Mapping[str, Any], counts: dict[str, int], provider: str
) -> None:
    """AI SDK 4-6: Anthropic's cache counts live in `ai.response.providerMetadata`.

    AI SDK 5 and 6 put Anthropic's raw `usage` there; 4 only the two cache counts, and
    its promptTokens (like 5's) leave the cache out. With the raw usage at hand it is
    the truth whatever the version; without it, 4's cache counts are added back.
    """
    if "ai.usage.inputTokenDetails.noCacheTokens" in attrs or "ai.usage.inputTokens" in attrs:
        return  # AI SDK 7: inputTokens is the total, its details name the cache
    raw = attrs.get("ai.response.providerMetadata")
    meta = _json_object(raw)
    anthropic = meta.get("anthropic") if meta else None
    if not isinstance(anthropic, Mapping):
        return
    usage = anthropic.get("usage")
    if isinstance(usage, Mapping) and _is_count(usage.get("input_tokens")):
        read = _count_or_zero(usage.get("cache_read_input_tokens"))
        write = _count_or_zero(usage.get("cache_creation_input_tokens"))
        counts["input_tokens"] = int(usage["input_tokens"]) + read + write
        counts["cached_input_tokens"] = read
        counts["cache_write_tokens"] = write
        if _is_count(usage.get("output_tokens")):
            counts["output_tokens"] = int(usage["output_tokens"])
        return
    read = _count_or_zero(anthropic.get("cacheReadInputTokens"))
    write = _count_or_zero(anthropic.get("cacheCreationInputTokens"))
    if read or write:
        counts["input_tokens"] = counts.get("input_tokens", 0) + read + write
        counts["cached_input_tokens"] = read
        counts["cache_write_tokens"] = write


# LangChain's usage_metadata details (langchain-core UsageMetadata): parts of its
# input_tokens, which is the sum of every input kind, and of its output_tokens.
_LANGCHAIN_INPUT_DETAILS = (
    ("cache_read", "cached_input_tokens"),
    ("cache_creation", "cache_write_tokens"),
    ("audio", "audio_input_tokens"),
)
_LANGCHAIN_OUTPUT_DETAILS = (("reasoning", "reasoning_tokens"), ("audio", "audio_output_tokens"))


def _langsmith_details(attrs: Mapping[str, Any], counts: dict[str, int], provider: str) -> None:
    """LangSmith's `gen_ai.usage.{input,output}_token_details`: a run's usage_metadata details.

    The Python SDK writes them with `str(dict)` (a Python literal), the JS SDK with
    JSON.stringify; both are read. The details are parts of the totals, as in LangChain.
    """
    for name, table in (
        ("gen_ai.usage.input_token_details", _LANGCHAIN_INPUT_DETAILS),
        ("gen_ai.usage.output_token_details", _LANGCHAIN_OUTPUT_DETAILS),
    ):
        details = _literal_object(attrs.get(name))
        if details is None:
            continue
        for key, ours in table:
            if _is_count(details.get(key)) and ours not in counts:
                counts[ours] = int(details[key])
        hour = details.get("ephemeral_1h_input_tokens")
        if name.startswith("gen_ai.usage.input") and isinstance(hour, int) and _is_count(hour):
            if hour <= counts.get("cache_write_tokens", 0):  # a part of the cache writes
                counts["cache_write_1h_tokens"] = hour


def _literal_object(raw: object) -> Mapping[str, Any] | None:
    """A JSON object, or the `str()` of a Python dict of plain values; else None."""
    value = _json_object(raw)
    if value is not None or not isinstance(raw, str) or not raw.startswith("{"):
        return value
    if len(raw) > 4096:
        return None
    import ast

    try:
        value = ast.literal_eval(raw)  # literals only: a str(dict) of counts, nothing runs
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    return value if isinstance(value, Mapping) else None


def _json_object(raw: object) -> Mapping[str, Any] | None:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, str) and raw.startswith("{") and len(raw) <= 1 << 20:
        import orjson

        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, Mapping) else None
    return None


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _count_or_zero(v: object) -> int:
    return int(v) if _is_count(v) else 0  # type: ignore[call-overload]


SEMCONV = Family(
    "semconv",
    "OpenTelemetry GenAI semantic conventions (current and deprecated names); "
    "opentelemetry-instrumentation-openai-v2 and the other contrib GenAI instrumentations, "
    "Spring AI, Microsoft Agent Framework, Google ADK",
    SEMCONV_TOKENS,
    WITH_CACHE,
    SEMCONV_COST,
)
OPENLLMETRY = Family(
    "openllmetry",
    "OpenLLMetry (Traceloop): opentelemetry-instrumentation-openai, -anthropic, ...",
    OPENLLMETRY_TOKENS,
    WITH_CACHE,
)
OPENLIT = Family(
    "openlit",
    "OpenLIT (`openlit.init()`)",
    SEMCONV_TOKENS,
    AS_PROVIDER,
    ("gen_ai.usage.cost",),
)
PYDANTIC_AI = Family(
    "pydantic_ai",
    "Pydantic AI and Logfire",
    SEMCONV_TOKENS,
    WITH_CACHE,
    ("operation.cost", "gen_ai.usage.cost"),
)
OPENINFERENCE = Family(
    "openinference",
    "OpenInference (Arize Phoenix instrumentations)",
    OPENINFERENCE_TOKENS,
    WITH_CACHE,
    ("llm.cost.total",),
)
VERCEL_AI = Family(
    "vercel_ai",
    "Vercel AI SDK 4 to 7 (`experimental_telemetry`)",
    VERCEL_TOKENS,
    # AI SDK 4-6 with Anthropic leave the cache out: the hook below puts it back.
    WITH_CACHE,
    (),
    _vercel_provider_metadata,
)

STRANDS = Family(
    "strands",
    "Strands Agents (`strands.telemetry.tracer`)",
    SEMCONV_TOKENS,
    # Its usage is the model provider's own: Bedrock's and Anthropic's inputTokens leave
    # the cache out, OpenAI's prompt_tokens hold it.
    AS_PROVIDER,
)

LANGSMITH = Family(
    "langsmith",
    "LangSmith's OpenTelemetry export (`LANGSMITH_OTEL_ENABLED`, Python and JS SDKs)",
    SEMCONV_TOKENS[:2],
    # usage_metadata.input_tokens is the sum of every input kind, the cache included.
    WITH_CACHE,
    (),
    _langsmith_details,
)

FAMILIES: tuple[Family, ...] = (
    SEMCONV,
    OPENLLMETRY,
    OPENLIT,
    PYDANTIC_AI,
    OPENINFERENCE,
    VERCEL_AI,
    LANGSMITH,
    STRANDS,
)

# Instrumentation scope names (tracer names) of OpenLLMetry's packages; the contrib
# GenAI instrumentations are named `..._v2`, `google_genai`, `vertexai`.
_CONTRIB_SCOPES = (
    "opentelemetry.instrumentation.openai_v2",
    "opentelemetry.instrumentation.openai_agents",
    "opentelemetry.instrumentation.google_genai",
    "opentelemetry.instrumentation.vertexai",
    "opentelemetry.util.genai",
)


def family_of(scope: str, attrs: Mapping[str, Any], resource: Mapping[str, Any]) -> Family:
    """The family that wrote a span, told by its tracer's name, else by its attributes."""
    if scope == "ai" or "ai.operationId" in attrs:
        return VERCEL_AI
    if "openinference.span.kind" in attrs or scope.startswith("openinference."):
        return OPENINFERENCE
    if scope == "langsmith" or "langsmith.span.kind" in attrs:
        return LANGSMITH
    if scope.startswith("openlit") or resource.get("telemetry.sdk.name") == "openlit":
        return OPENLIT
    if scope.startswith(("pydantic-ai", "pydantic_ai", "logfire")):
        return PYDANTIC_AI
    if scope.startswith("strands."):
        return STRANDS
    if scope.startswith("opentelemetry.instrumentation.") and not scope.startswith(_CONTRIB_SCOPES):
        return OPENLLMETRY
    if "traceloop.span.kind" in attrs or "llm.request.type" in attrs:
        return OPENLLMETRY
    return SEMCONV


# Providers whose API reports input tokens without the cache (see shapes/anthropic.py).
CACHE_EXCLUDED_PROVIDERS = frozenset(("anthropic", "bedrock"))


def input_holds_cache(family: Family, provider: str) -> bool:
    if family.input_cache == WITH_CACHE:
        return True
    if family.input_cache == WITHOUT_CACHE:
        return False
    return provider not in CACHE_EXCLUDED_PROVIDERS


def mapping_table() -> str:
    """The README's OTLP mapping table (attribute -> event field), made from the tables above."""
    rows = ["| family | input includes the cache | event field | span attributes, first present wins |",
            "| --- | --- | --- | --- |"]  # fmt: skip
    for family in FAMILIES:
        for i, (ours, names) in enumerate(family.tokens):
            head = f"{family.name} ({family.title})" if i == 0 else ""
            cache = family.input_cache if i == 0 else ""
            rows.append(f"| {head} | {cache} | `{ours}` | {', '.join(f'`{n}`' for n in names)} |")
        if family.extra is not None:
            doc = (family.extra.__doc__ or "").strip().splitlines()[0]
            rows.append(f"| | | counts read beside the table | {doc} |")
        if family.cost:
            rows.append(
                f"| | | sender's cost (kept beside ours) | {', '.join(f'`{n}`' for n in family.cost)} |"
            )
    return "\n".join(rows) + "\n"
