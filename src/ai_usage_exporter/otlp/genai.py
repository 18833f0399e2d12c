"""GenAI spans to usage events (pure): which spans count, and what they count.

A span becomes an event only if it is one inference call. Agent, workflow and
framework spans carry their children's totals: they lend their names (agent,
workflow) to the calls under them and are never counted themselves. A call whose
usage is split over nested spans, or over spans sharing a response id, is one event.
The events are the mappings POST /api/usage takes, so the recorder validates and
prices them exactly like posted ones.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ai_usage_exporter.core.pricing.book import USAGE_UNKNOWN
from ai_usage_exporter.otlp.families import (
    LANGSMITH,
    OPENINFERENCE,
    STRANDS,
    VERCEL_AI,
    Family,
    family_of,
    input_holds_cache,
)
from ai_usage_exporter.otlp.spans import Batch, SpanView

# gen_ai.operation.name (and the older spellings) of one inference call -> our operation.
INFERENCE_OPS: dict[str, str] = {
    "chat": "chat",
    "text_completion": "text_completion",
    "completion": "text_completion",
    "generate_content": "generate_content",
    "embeddings": "embeddings",
    "embedding": "embeddings",
    "responses": "chat",
}
# Spans that hold other spans' totals.
AGGREGATE_OPS = frozenset(("invoke_agent", "create_agent", "invoke_workflow", "agent", "workflow"))
AGGREGATE_KINDS = frozenset(("workflow", "task", "agent", "AGENT", "CHAIN"))
VERCEL_OUTER = frozenset(
    (
        "ai.generateText",
        "ai.streamText",
        "ai.generateObject",
        "ai.streamObject",
        "ai.embed",
        "ai.embedMany",
    )
)

OUTCOMES: tuple[str, ...] = (
    "counted",
    "duplicate",
    "not_genai",
    "aggregate",
    "merged",
    "not_inference",
    "rejected",
)

PROVIDER_NAMES: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "aws.bedrock": "bedrock",
    "amazon-bedrock": "bedrock",
    "bedrock": "bedrock",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.inference": "azure",
    "azure-openai": "azure",
    "azure": "azure",
    "gcp.gemini": "google",
    "gemini": "google",
    "gcp.gen_ai": "google",
    "google": "google",
    "google.generative-ai": "google",
    "gcp.vertex_ai": "vertex_ai",
    "gcp.vertex.agent": "google",
    "vertex_ai": "vertex_ai",
    "google.vertex": "vertex_ai",
    "cohere": "cohere",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "mistral": "mistral",
    "x_ai": "xai",
    "xai": "xai",
    "groq": "groq",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "ibm.watsonx.ai": "watsonx",
    "ollama": "ollama",
    "openrouter": "openrouter",
}
# Names senders put in gen_ai.system that are frameworks, not providers.
FRAMEWORKS = frozenset(
    (
        "langchain",
        "langgraph",
        "llamaindex",
        "llama_index",
        "crewai",
        "haystack",
        "strands-agents",
    )
)
# A Bedrock model id: an optional cross-region inference prefix, the model's vendor, a
# dot (us.anthropic.claude-sonnet-4-20250514-v1:0, amazon.nova-pro-v1:0).
_BEDROCK_MODEL = re.compile(
    r"(?:(?:us|eu|apac|global|us-gov|ca|jp|au)\.)?"
    r"(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|openai|qwen|writer)\.[a-z0-9]"
)
# Model name prefixes that name their provider unambiguously.
MODEL_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("claude", "anthropic"),
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding-", "openai"),
    ("chatgpt", "openai"),
    ("gemini", "google"),
    ("mistral", "mistral"),
    ("mixtral", "mistral"),
    ("codestral", "mistral"),
    ("command", "cohere"),
    ("grok", "xai"),
    ("deepseek", "deepseek"),
)
SERVER_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "openai"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "google"),
    ("aiplatform.googleapis.com", "vertex_ai"),
    (".openai.azure.com", "azure"),
    ("bedrock-runtime.", "bedrock"),
    ("api.groq.com", "groq"),
    ("api.mistral.ai", "mistral"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "xai"),
    ("api.cohere.com", "cohere"),
    ("openrouter.ai", "openrouter"),
)

MODEL_ATTRS = (
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
    "ai.response.model",
    "ai.model.id",
    "langsmith.metadata.ls_model_name",
)
PROVIDER_ATTRS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
AGENT_ATTRS = ("gen_ai.agent.name", "agent_name")
WORKFLOW_ATTRS = ("traceloop.workflow.name", "gen_ai.workflow.name", "ai.telemetry.functionId")
SESSION_ATTRS = (
    "gen_ai.conversation.id",
    "session.id",
    "traceloop.association.properties.session_id",
    "ai.telemetry.metadata.sessionId",
    # LangSmith threads: the metadata keys its docs name (langsmith.trace.session_id is
    # the LangSmith project, not a conversation).
    "langsmith.metadata.session_id",
    "langsmith.metadata.thread_id",
    "langsmith.metadata.conversation_id",
)
USER_ATTRS = (
    "user.id",
    "enduser.id",
    "traceloop.association.properties.user_id",
    "ai.telemetry.metadata.userId",
    "langsmith.metadata.user_id",
)
TENANT_ATTRS = ("tenant.id", "traceloop.association.properties.tenant")
RESPONSE_ID_ATTRS = ("gen_ai.response.id", "ai.response.id")

TIER_ATTRS = ("openai.response.service_tier", "gen_ai.openai.response.service_tier")
_NAMES: dict[tuple[str, ...], frozenset[str]] = {
    names: frozenset(names)
    for names in (
        MODEL_ATTRS,
        PROVIDER_ATTRS,
        AGENT_ATTRS,
        WORKFLOW_ATTRS,
        SESSION_ATTRS,
        USER_ATTRS,
        TENANT_ATTRS,
        RESPONSE_ID_ATTRS,
        TIER_ATTRS,
    )
}

_MAX_ANCESTORS = 64
_MAX_LABEL = 256


class BadSpan(Exception):
    """A span we refuse; the message names the attribute and its value."""


@dataclass(slots=True)
class _Call:
    span: SpanView
    family: Family
    op: str
    counts: dict[str, int] | None
    definite: bool  # an inference span by its own marks, not only by carrying usage
    provider: str = "unknown"
    children: list[_Call] = field(default_factory=list)
    parent: _Call | None = None
    rid: str | None = None  # the response id, once read


@dataclass(slots=True)
class Parts:
    """One call's event, its fields already sorted by kind (see `typed_event`)."""

    labels: dict[str, str]
    attribution: dict[str, str]
    counts: dict[str, int]
    timestamp: float
    status: str
    level: str | None = None
    duration_ms: float | None = None
    ttft_ms: float | None = None
    metadata: dict[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        """The event as the mapping POST /api/usage takes."""
        out: dict[str, Any] = {**self.labels, "timestamp": self.timestamp, "status": self.status}
        for name, value in (
            ("level", self.level),
            ("duration_ms", self.duration_ms),
            ("ttft_ms", self.ttft_ms),
            ("metadata", self.metadata),
        ):
            if value is not None:
                out[name] = value
        out.update(self.counts)
        out.update(self.attribution)
        return out


@dataclass(slots=True)
class Mapped:
    """An export's calls (with the span each came from) and what became of the rest."""

    parts: list[Parts]
    sources: list[SpanView]  # the span each call's event came from
    outcomes: Counter[str]
    rejected: list[str]
    # For `Recent.note` once the calls are committed.
    remember: list[tuple[str, bytes, tuple[bytes, ...], str | None]] = field(default_factory=list)

    @property
    def spans(self) -> list[str]:
        """ "trace_id/span_id" of each call's span, to name a refused one."""
        return [f"{s.trace_id}/{s.span_id}" for s in self.sources]

    @property
    def events(self) -> list[dict[str, Any]]:
        """The calls as the mappings POST /api/usage takes."""
        return [p.fields() for p in self.parts]


def count(name: str, raw: object) -> int:
    """A token count however a sender encoded it: int, integral float or decimal string."""
    if isinstance(raw, bool):
        raise BadSpan(f"attribute {name} must be a token count, got {raw!r}")
    if isinstance(raw, int):
        n = raw
    elif isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        n = int(raw)
    elif isinstance(raw, str) and raw.strip().isdigit() and len(raw) <= 20:
        n = int(raw.strip())
    else:
        raise BadSpan(f"attribute {name} must be a token count, got {_show(raw)}")
    if n < 0:
        raise BadSpan(f"attribute {name} must be >= 0, got {n}")
    return n


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_str(attrs: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    if len(names) > 1 and _NAMES[names].isdisjoint(attrs):
        return None  # most spans carry none of a group: one C-level check
    for name in names:
        v = attrs.get(name)
        if isinstance(v, str) and v:
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
    return None


_TOTALS = frozenset(("input_tokens", "output_tokens"))


def read_counts(span: SpanView, family: Family, provider: str) -> dict[str, int] | None:
    """The span's usage in our convention, or None when it carries no usage at all."""
    attrs = span.attrs
    index = family.index
    found: dict[str, tuple[int, str]] = {}
    for name, raw in attrs.items():
        hit = index.get(name)
        if hit is None or raw is None:
            continue
        ours, rank = hit
        held = found.get(ours)
        if held is None or rank < held[0]:  # the table's first name present wins
            found[ours] = (rank, name)
    counts: dict[str, int] = {}
    for ours, (_, name) in found.items():
        raw = attrs[name]
        # A plain non-negative int is most senders' count; `count` reads the rest.
        counts[ours] = raw if type(raw) is int and raw >= 0 else count(name, raw)
    if family.extra is not None:
        family.extra(attrs, counts, provider)
    if not counts:
        return None
    if len(counts) <= 2 and _TOTALS.issuperset(counts):
        return counts  # input and output alone: nothing below to reconcile
    cache = counts.get("cached_input_tokens", 0) + counts.get("cache_write_tokens", 0)
    # A family that leaves the cache out of its input count (or a sender that does,
    # whatever its family: the input cannot be smaller than its part) has it added.
    if cache and (not input_holds_cache(family, provider) or cache > counts.get("input_tokens", 0)):
        counts["input_tokens"] = counts.get("input_tokens", 0) + cache
    # Likewise reasoning reported beside the output instead of inside it.
    sub_out = counts.get("reasoning_tokens", 0) + counts.get("audio_output_tokens", 0)
    if sub_out > counts.get("output_tokens", 0):
        counts["output_tokens"] = counts.get("output_tokens", 0) + sub_out
    if counts.get("audio_input_tokens", 0) > counts.get("input_tokens", 0):
        counts["input_tokens"] = counts.get("input_tokens", 0) + counts["audio_input_tokens"]
    if counts.get("cached_audio_input_tokens", 0) > min(
        counts.get("cached_input_tokens", 0), counts.get("audio_input_tokens", 0)
    ):
        counts.pop("cached_audio_input_tokens")
    return counts


def classify(span: SpanView, family: Family) -> tuple[str, str]:
    """("inference", operation), ("maybe", "chat"), ("aggregate", "") or ("skip", reason)."""
    a = span.attrs
    if family is VERCEL_AI:
        op_id = a.get("ai.operationId")
        name = op_id if isinstance(op_id, str) else span.name
        if name.endswith((".doGenerate", ".doStream")):
            return "inference", "chat"
        if name.endswith(".doEmbed"):
            return "inference", "embeddings"
        if name in VERCEL_OUTER:
            return "aggregate", ""
    if family is LANGSMITH:
        # Its gen_ai.operation.name is derived from the run type and says "chat" for a
        # prompt template and "embeddings" for a retriever; the run type itself is exact.
        run_type = a.get("langsmith.span.kind")
        if run_type == "llm":
            return "inference", "chat"
        if run_type == "embedding":
            return "inference", "embeddings"
        if run_type in ("chain", "agent"):
            return "aggregate", ""
        if isinstance(run_type, str):
            return "skip", "not_inference"
    if family is OPENINFERENCE:
        kind = a.get("openinference.span.kind")
        if kind == "LLM":
            return "inference", "chat"
        if kind == "EMBEDDING":
            return "inference", "embeddings"
        if kind in AGGREGATE_KINDS:
            return "aggregate", ""
        return "skip", "not_inference"
    op = a.get("gen_ai.operation.name")
    if isinstance(op, str):
        if op in INFERENCE_OPS:
            return "inference", INFERENCE_OPS[op]
        if op in AGGREGATE_OPS:
            return "aggregate", ""
    kind = a.get("traceloop.span.kind")
    if isinstance(kind, str):
        if kind in AGGREGATE_KINDS:
            return "aggregate", ""
        return "skip", "not_inference"
    request_type = a.get("llm.request.type")
    if isinstance(request_type, str) and request_type in INFERENCE_OPS:
        return "inference", INFERENCE_OPS[request_type]
    if span.name == "agent run" or span.name.startswith(("invoke_agent", "invoke_workflow")):
        return "aggregate", ""
    if "spring.ai.kind" in a:
        return "aggregate", ""
    if isinstance(op, str):
        return "skip", "not_inference"
    return "maybe", "chat"


def provider_of(span: SpanView) -> str:
    """From the attributes, else the model name, else the server address; else 'unknown'."""
    a = span.attrs
    raw = _first_str(a, PROVIDER_ATTRS)
    if raw is not None and raw.lower() in FRAMEWORKS:
        # A framework's name where the provider belongs (LangSmith writes "langchain"
        # when it cannot tell); LangChain's own ls_provider says which, if it is there.
        raw = _first_str(a, ("langsmith.metadata.ls_provider",))
    if raw is None:
        vercel = a.get("ai.model.provider")
        if isinstance(vercel, str) and vercel:
            raw = vercel.split(".", 1)[0]
    if raw is not None:
        low = raw.lower()
        if low in PROVIDER_NAMES:
            return PROVIDER_NAMES[low]
        # The AI SDK names a provider's API after it: anthropic.messages, openai.chat.
        head = low.split(".", 1)[0]
        return PROVIDER_NAMES.get(head, low)
    model = (_first_str(a, MODEL_ATTRS) or "").lower()
    if _BEDROCK_MODEL.match(model):
        return "bedrock"
    for prefix, provider in MODEL_PROVIDERS:
        if model.startswith(prefix):
            return provider
    server = _first_str(a, ("server.address",))
    if server:
        for part, provider in SERVER_PROVIDERS:
            if part in server:
                return provider
    return "unknown"


class Recent:
    """Calls counted from earlier exports, so that one call never counts twice.

    A call's spans can land in different exports: the batch processor exports spans as
    they end, and a wrapper span (a framework's span over the client library's span of
    the same call, or a request span beside its streaming-response span) may end just
    after a batch was cut. Within one export the tree says which span is the call; across
    exports this remembers, for the most recent calls, the span counted, its ancestors
    and its response id. Bounded: the oldest are forgotten first. Only the mapping reads
    it (`map_batch`); the receiver adds a batch's calls once they are committed.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self.calls: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self.above: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self.responses: OrderedDict[tuple[str, str], None] = OrderedDict()

    def covers(self, span: SpanView, parents: Mapping[bytes, bytes], rid: str | None) -> bool:
        """Whether a counted call is this span's own (nested in it, around it, same id)."""
        trace = span.trace_id
        if (trace, span.sid) in self.above or (rid is not None and (trace, rid) in self.responses):
            return True
        pid = span.pid
        for _ in range(_MAX_ANCESTORS):
            if not pid:
                return False
            if (trace, pid) in self.calls:
                return True
            pid = parents.get(pid, b"")
        return False

    def note(self, calls: list[tuple[str, bytes, tuple[bytes, ...], str | None]]) -> None:
        """Remember committed calls: (trace id, span id, ancestor span ids, response id)."""
        for trace, sid, ancestors, rid in calls:
            self.calls[(trace, sid)] = None
            for up in ancestors:
                self.above[(trace, up)] = None
            if rid is not None:
                self.responses[(trace, rid)] = None
        for table in (self.calls, self.above, self.responses):
            while len(table) > self.capacity:
                table.popitem(last=False)


def map_batch(batch: Batch, recent: Recent | None = None) -> Mapped:
    """Every GenAI span of an export mapped: events, and an outcome for every other span.

    With `recent`, a call already counted from an earlier export is not counted again.
    """
    outcomes: Counter[str] = Counter()
    outcomes["not_genai"] = batch.not_genai
    rejected: list[str] = list(batch.undecodable)
    outcomes["rejected"] += len(batch.undecodable)
    calls: dict[bytes, _Call] = {}
    aggregates: dict[bytes, SpanView] = {}
    for span in batch.spans:
        family = family_of(span.scope, span.attrs, span.resource)
        kind, op = classify(span, family)
        if kind == "skip":
            outcomes[op] += 1
            continue
        if kind == "aggregate":
            aggregates[span.sid] = span
            outcomes["aggregate"] += 1
            continue
        provider = provider_of(span)
        try:
            counts = read_counts(span, family, provider)
        except BadSpan as exc:
            rejected.append(f"span {span.trace_id}/{span.span_id} ({span.name}): {exc}")
            outcomes["rejected"] += 1
            continue
        if kind == "maybe" and counts is None:
            outcomes["not_inference"] += 1
            continue
        calls[span.sid] = _Call(span, family, op, counts, kind == "inference", provider)

    # Nearest inference ancestor of each call, in the same export.
    parents = batch.parents
    for call in calls.values():
        pid = call.span.pid
        for _ in range(_MAX_ANCESTORS):
            if not pid:
                break
            up = calls.get(pid)
            if up is not None and up.span.trace_id == call.span.trace_id:
                call.parent = up
                up.children.append(call)
                break
            pid = parents.get(pid, b"")

    # Leaves are the calls; a span over one call is that call split (its parts fold
    # into the leaf: a part's count fills a field the leaf left empty, never adds to
    # one it has); a span over several is an aggregate. Sibling spans of one response
    # (a request span and a streaming-response span) are one call too.
    by_response: dict[tuple[str, str], _Call] = {}
    kept: list[_Call] = []
    for leaf in calls.values():
        children = leaf.children
        if children:
            outcomes["merged" if len(children) == 1 else "aggregate"] += 1
            continue
        up = leaf.parent
        while up is not None and len(up.children) == 1:
            if up.counts:
                if leaf.counts is None:
                    leaf.counts = dict(up.counts)
                else:
                    for k, v in up.counts.items():
                        if not leaf.counts.get(k):
                            leaf.counts[k] = v
            up = up.parent
        rid = _first_str(leaf.span.attrs, RESPONSE_ID_ATTRS)
        if recent is not None and recent.covers(leaf.span, parents, rid):
            outcomes["merged"] += 1  # the rest of a call an earlier export counted
            continue
        if rid is not None:
            key = (leaf.span.trace_id, rid)
            first = by_response.get(key)
            if first is not None:
                if leaf.counts:
                    if first.counts is None:
                        first.counts = dict(leaf.counts)
                    else:
                        for k, v in leaf.counts.items():
                            first.counts[k] = max(first.counts.get(k, 0), v)
                outcomes["merged"] += 1
                continue
            by_response[key] = leaf
        kept.append(leaf)
        leaf.rid = rid

    # After every merge, which may still add to a kept call's counts.
    parts = [_event(leaf, aggregates, parents) for leaf in kept]
    return Mapped(parts, [leaf.span for leaf in kept], outcomes, rejected, _remember(kept, parents))


def _remember(
    kept: list[_Call], parents: Mapping[bytes, bytes]
) -> list[tuple[str, bytes, tuple[bytes, ...], str | None]]:
    """What `Recent` keeps of each counted call: its trace, span, ancestors, response id."""
    out = []
    for leaf in kept:
        span = leaf.span
        ancestors: list[bytes] = []
        pid = span.pid
        while pid and len(ancestors) < _MAX_ANCESTORS:
            ancestors.append(pid)
            pid = parents.get(pid, b"")
        out.append((span.trace_id, span.sid, tuple(ancestors), leaf.rid))
    return out


def _attribution(
    span: SpanView,
    aggregates: Mapping[bytes, SpanView],
    parents: Mapping[bytes, bytes],
) -> tuple[str | None, str | None, str | None]:
    """The agent, workflow and conversation a call ran under: its own, else its ancestors'.

    The conversation is only looked for above: a framework puts its thread id on the
    agent span and not always on the calls it makes (Agent Framework, Google ADK).
    """
    pid = span.pid
    if not (pid and aggregates) and _AGENT_WORKFLOW.isdisjoint(span.attrs):
        return None, None, None  # nothing of its own, and no agent or workflow above it
    agent = _first_str(span.attrs, AGENT_ATTRS)
    workflow = _first_str(span.attrs, WORKFLOW_ATTRS)
    session = _first_str(span.attrs, SESSION_ATTRS)
    inherited: str | None = None
    for _ in range(_MAX_ANCESTORS):
        if (agent is not None and workflow is not None and session is not None) or not pid:
            break
        up = aggregates.get(pid)
        if up is not None:
            a = up.attrs
            if session is None:
                session = inherited = _first_str(a, SESSION_ATTRS)
            if agent is None:
                agent = _first_str(a, AGENT_ATTRS)
                if agent is None and (
                    a.get("traceloop.span.kind") == "agent"
                    or a.get("openinference.span.kind") == "AGENT"
                ):
                    agent = _first_str(a, ("traceloop.entity.name",)) or up.name
            if workflow is None:
                workflow = _first_str(a, WORKFLOW_ATTRS)
                if workflow is None and a.get("traceloop.span.kind") == "workflow":
                    workflow = _first_str(a, ("traceloop.entity.name",))
        pid = parents.get(pid, b"")
    return agent, workflow, inherited


_AGENT_WORKFLOW = frozenset((*AGENT_ATTRS, *WORKFLOW_ATTRS))
# Attribution a span may carry itself; most carry none, which one check tells.
_OPTIONAL = frozenset(
    (*AGENT_ATTRS, *WORKFLOW_ATTRS, *SESSION_ATTRS, *USER_ATTRS, *TENANT_ATTRS, *TIER_ATTRS)
)


def _event(
    call: _Call,
    aggregates: Mapping[bytes, SpanView],
    parents: Mapping[bytes, bytes],
) -> Parts:
    span = call.span
    a = span.attrs
    service = span.resource.get("service.name")
    labels: dict[str, str] = {
        "provider": call.provider[:_MAX_LABEL],
        "model": (_first_str(a, MODEL_ATTRS) or "unknown")[:_MAX_LABEL],
        "operation": call.op,
        "service": service[:_MAX_LABEL] if isinstance(service, str) and service else "default",
        "idempotency_key": f"otlp:{span.trace_id}:{span.span_id}",
    }
    parts = Parts(labels, {}, {}, span.start_ns / 1e9, "error" if span.error else "ok")
    if span.end_ns >= span.start_ns > 0:
        parts.duration_ms = (span.end_ns - span.start_ns) / 1e6
    ttft = a.get("gen_ai.response.time_to_first_chunk")
    if isinstance(ttft, int | float) and not isinstance(ttft, bool) and ttft >= 0:
        parts.ttft_ms = float(ttft) * 1000.0
    else:
        # The AI SDK's, and Strands' (milliseconds under a name semconv gives a metric).
        ms = a.get(
            "gen_ai.server.time_to_first_token"
            if call.family is STRANDS
            else "ai.response.msToFirstChunk"
        )
        if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
            parts.ttft_ms = float(ms)
    if span.error:
        labels["error_type"] = (_first_str(a, ("error.type",)) or span.exception_type or "error")[
            :_MAX_LABEL
        ]
    # Only what a person needs beside the counts, so a plain call stays a plain event
    # and its ledger row carries no JSON.
    metadata: dict[str, Any] = {}
    for name in call.family.cost:
        cost = a.get(name)
        if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost):
            if cost >= 0:
                # Kept for comparison beside our price, never used as it.
                metadata["sender_cost_usd"] = float(cost)
            break
    if call.counts is None:
        parts.level = "warn"
        metadata[USAGE_UNKNOWN] = (
            f"the {call.family.name} span {span.name!r} carries no token counts"
        )
    else:
        parts.counts = call.counts
    if metadata:
        metadata["otlp_family"] = call.family.name
        parts.metadata = metadata
    agent, workflow, session = _attribution(span, aggregates, parents)
    attribution = parts.attribution
    if agent is not None:
        attribution["agent"] = agent[:1024]
    if workflow is not None:
        attribution["workflow_id"] = workflow[:1024]
    if session is not None:
        attribution["session_id"] = session[:1024]
    if not _OPTIONAL.isdisjoint(a):
        for name, value in (
            ("session_id", _first_str(a, SESSION_ATTRS)),
            ("user", _first_str(a, USER_ATTRS)),
            ("tenant", _first_str(a, TENANT_ATTRS)),
        ):
            if value is not None:
                attribution[name] = value[:1024]
        tier = _first_str(a, TIER_ATTRS)
        if tier is not None:
            labels["service_tier"] = tier[:_MAX_LABEL]
    return parts
