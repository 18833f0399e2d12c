"""Metric names, label sets, bounded label values, and the in-memory aggregate state.

The state is plain dictionaries keyed by label tuples, updated from *rollup deltas*
(see `rollup.py`): the same deltas the ledger adds to its rollup table, so counters
rebuilt from the ledger at start equal counters built live. It reaches Prometheus two
ways: as a `Collector` registered in an injected registry (interoperable with
`generate_latest`), and through `render_text`, which writes the same samples from
cached label strings (several times cheaper than building MetricFamily objects).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ai_usage_exporter.core.rollup import (
    BUCKETS_SECONDS,
    COST_INPUT,
    COST_OUTPUT,
    COST_TOTAL,
    COUNT_COLUMNS,
    DUR_BUCKETS,
    DUR_COUNT,
    DUR_SUM_US,
    KEY_FIELDS,
    NANO,
    REASON_COLUMNS,
    REQUESTS,
    RETIRED_INSTANCE,
    TOKEN_COLUMNS,
    TTFT_BUCKETS,
    TTFT_COUNT,
    TTFT_SUM_US,
    UNASSIGNED_INSTANCE,
)
from ai_usage_exporter.core.shapes import COUNT_FIELDS, TOKEN_FIELDS

BUCKETS: tuple[float, ...] = BUCKETS_SECONDS

# input, output, total, then every sub-kind of TOKEN_FIELDS by its name without _tokens.
TOKEN_TYPES: tuple[str, ...] = (
    "input",
    "output",
    "total",
    *(f.removesuffix("_tokens") for f in TOKEN_FIELDS[2:]),
)
_SUBKINDS = tuple(enumerate(TOKEN_COLUMNS[2:], start=3))
# Each of COUNT_FIELDS by its name without _requests: web_search, ...
SERVER_TOOL_TYPES: tuple[str, ...] = tuple(f.removesuffix("_requests") for f in COUNT_FIELDS)
_COUNTS = tuple(enumerate(COUNT_COLUMNS))
_REASONS = tuple(REASON_COLUMNS.items())
COST_TYPES: tuple[str, ...] = ("input", "output", "total")
LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error")

# Attribution fields a deployment may promote to Prometheus labels; each is a rollup
# key, so counters with it can still be rebuilt from the ledger at start.
OPTIONAL_LABELS: tuple[str, ...] = ("tenant", "agent", "tool", "task", "node", "key")

OTHER = "__other__"

DEFAULT_LABEL_CAPS: dict[str, int] = {
    "service": 200,
    "provider": 50,
    "model": 500,
    "operation": 50,
    "tenant": 1000,
    "agent": 200,
    "tool": 200,
    "task": 200,
    "node": 200,
    "key": 1000,
}

HELP = {
    "ai_requests": "LLM calls recorded, by calling service, provider, model, operation and status.",
    "ai_tokens": "Tokens used by LLM calls; input includes cached and cache-write tokens, "
    "output includes reasoning tokens, total is input plus output.",
    "ai_cost": "Cost of LLM calls in US dollars; total is input plus output, so never sum over type.",
    "ai_server_tool_requests": "Requests LLM calls made to tools the provider runs and bills "
    "per request (web_search), by type; part of the calls in ai_requests_total, not calls of "
    "their own.",
    "ai_requests_by_level": "LLM calls recorded, by log level.",
    "ai_average_duration_ms": "Mean LLM call duration in milliseconds since the ledger began "
    "(legacy; use ai_request_duration_seconds).",
    "ai_request_duration_seconds": "Duration of LLM calls in seconds.",
    "ai_time_to_first_token_seconds": "Time from request to the first streamed token in seconds.",
    "ai_unpriced_requests": "LLM calls priced at 0 or only approximately, by reason: "
    "unknown_model (cost 0), unpriced_token_type (some tokens at their parent kind's rate), "
    "unknown_tier (a service tier priced at the standard rate).",
    "ai_exporter_events_accepted": "Usage events accepted and committed to the ledger.",
    "ai_exporter_events_duplicate": "Usage events acknowledged as duplicates of an earlier idempotency_key.",
    "ai_exporter_events_rejected": "Usage events rejected, by reason.",
    "ai_exporter_label_values_folded": "Events whose label value was folded into __other__ "
    "because the label reached its cap of distinct values.",
    "ai_exporter_build_info": "Build information of the exporter; always 1.",
    "ai_fleet_requests": "LLM calls recorded by every sidecar sharing the ledger, retired "
    "ones included; the same value on every member, so take max(), never sum().",
    "ai_fleet_tokens": "Tokens recorded by every sidecar sharing the ledger, by type as in "
    "ai_tokens_total; the same value on every member, so take max(), never sum().",
    "ai_fleet_server_tool_requests": "Provider-run tool requests recorded by every sidecar "
    "sharing the ledger, type as in ai_server_tool_requests_total; the same value on every "
    "member, so take max(), never sum().",
    "ai_fleet_cost_usd": "Cost in US dollars recorded by every sidecar sharing the ledger; "
    "total is input plus output; the same value on every member, so take max(), never sum().",
    "ai_fleet_instances": "Sidecar instances with rows in the shared ledger, retired ones "
    "not counted.",
}

FLEET_GAUGES: tuple[str, ...] = (
    "ai_fleet_requests",
    "ai_fleet_tokens",
    "ai_fleet_server_tool_requests",
    "ai_fleet_cost_usd",
    "ai_fleet_instances",
)


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels_text(names: Sequence[str], values: Sequence[str]) -> str:
    inner = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


class LabelFolder:
    """Admits up to `cap` distinct values of one label; later ones become `__other__`."""

    __slots__ = ("name", "cap", "seen", "folded")

    def __init__(self, name: str, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"label cap for {name!r} must be >= 1, got {cap}")
        self.name = name
        self.cap = cap
        self.seen: set[str] = set()
        self.folded = 0

    def fold(self, value: str, weight: int = 1) -> str:
        if value in self.seen:
            return value
        if len(self.seen) < self.cap:
            self.seen.add(value)
            return value
        self.folded += weight
        return OTHER


class _Series:
    """Per (service, provider, model[, optional labels]) counters and histograms."""

    __slots__ = (
        "labels",
        "tokens",
        "counts",
        "cost",
        "dur_buckets",
        "dur_sum",
        "dur_count",
        "ttft_buckets",
        "ttft_sum",
        "ttft_count",
    )

    def __init__(self, labels: str) -> None:
        self.labels = labels  # rendered `service="..",provider="..",model=".."` without braces
        self.tokens = [0] * len(TOKEN_TYPES)
        self.counts = [0] * len(SERVER_TOOL_TYPES)
        self.cost = [0, 0, 0]  # nanodollars
        self.dur_buckets = [0] * (len(BUCKETS) + 1)
        self.dur_sum = 0  # microseconds
        self.dur_count = 0
        self.ttft_buckets = [0] * (len(BUCKETS) + 1)
        self.ttft_sum = 0
        self.ttft_count = 0


@dataclass
class ExporterCounts:
    accepted: int = 0
    duplicate: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class MetricsState:
    """The aggregates behind every exported sample; thread-safe through one lock."""

    def __init__(
        self,
        *,
        label_caps: Mapping[str, int] | None = None,
        extra_labels: Sequence[str] = (),
        build_info: Mapping[str, str] | None = None,
    ) -> None:
        for name in extra_labels:
            if name not in OPTIONAL_LABELS:
                raise ValueError(
                    f"label {name!r} cannot be a Prometheus label; choose from {', '.join(OPTIONAL_LABELS)}"
                )
        caps = dict(DEFAULT_LABEL_CAPS)
        for name, cap in (label_caps or {}).items():
            if name not in caps:
                raise ValueError(f"unknown label {name!r} in label caps; known: {', '.join(caps)}")
            caps[name] = cap
        self.extra_labels = tuple(extra_labels)
        self._extra_idx = tuple(KEY_FIELDS.index(n) for n in self.extra_labels)
        self.folders = {
            n: LabelFolder(n, caps[n])
            for n in ("service", "provider", "model", "operation", *self.extra_labels)
        }
        self.lock = threading.Lock()
        self.series: dict[tuple[str, ...], _Series] = {}
        self.requests: dict[
            tuple[str, ...], list[int]
        ] = {}  # key -> [count]; label text cached apart
        self.request_labels: dict[tuple[str, ...], str] = {}
        self.levels: dict[str, int] = dict.fromkeys(LEVELS, 0)
        self.avg_duration: dict[str, list[int]] = {}  # service -> [sum_us, count]
        self.unpriced: dict[tuple[str, str, str], int] = {}
        self.exporter = ExporterCounts()
        self.build_info = dict(build_info or {})
        self.series_labelnames = ("service", "provider", "model", *self.extra_labels)
        self.request_labelnames = (
            "service",
            "provider",
            "model",
            "operation",
            "status",
            *self.extra_labels,
        )

    # ---------------------------------------------------------------- updates

    def apply(self, deltas: Iterable[tuple[tuple[str, ...], Sequence[int]]]) -> None:
        """Add rollup deltas (key, values) to the counters."""
        with self.lock:
            for key, vec in deltas:
                self._apply_one(key, vec)

    def _apply_one(self, key: tuple[str, ...], vec: Sequence[int]) -> None:
        n = vec[REQUESTS]
        folders = self.folders
        service = folders["service"].fold(key[0], n)
        provider = folders["provider"].fold(key[1], n)
        model = folders["model"].fold(key[2], n)
        operation = folders["operation"].fold(key[3], n)
        status, level = key[4], key[5]
        extras = tuple(
            folders[name].fold(key[i], n)
            for name, i in zip(self.extra_labels, self._extra_idx, strict=True)
        )

        skey = (service, provider, model, *extras)
        s = self.series.get(skey)
        if s is None:
            s = self.series[skey] = _Series(_labels_text(self.series_labelnames, skey)[1:-1])
        tokens = s.tokens
        inp, out = vec[TOKEN_COLUMNS[0]], vec[TOKEN_COLUMNS[1]]
        tokens[0] += inp
        tokens[1] += out
        tokens[2] += inp + out
        for i, col in _SUBKINDS:
            tokens[i] += vec[col]
        counts = s.counts
        for i, col in _COUNTS:
            counts[i] += vec[col]
        cost = s.cost
        cost[0] += vec[COST_INPUT]
        cost[1] += vec[COST_OUTPUT]
        cost[2] += vec[COST_TOTAL]
        dc = vec[DUR_COUNT]
        if dc:
            s.dur_count += dc
            s.dur_sum += vec[DUR_SUM_US]
            b = s.dur_buckets
            for i, col in enumerate(DUR_BUCKETS):
                b[i] += vec[col]
            avg = self.avg_duration.get(service)
            if avg is None:
                avg = self.avg_duration[service] = [0, 0]
            avg[0] += vec[DUR_SUM_US]
            avg[1] += dc
        tc = vec[TTFT_COUNT]
        if tc:
            s.ttft_count += tc
            s.ttft_sum += vec[TTFT_SUM_US]
            b = s.ttft_buckets
            for i, col in enumerate(TTFT_BUCKETS):
                b[i] += vec[col]

        rkey = (service, provider, model, operation, status, *extras)
        r = self.requests.get(rkey)
        if r is None:
            r = self.requests[rkey] = [0]
            self.request_labels[rkey] = _labels_text(self.request_labelnames, rkey)
        r[0] += n
        self.levels[level] = self.levels.get(level, 0) + n
        for reason, col in _REASONS:
            up = vec[col]
            if up:
                ukey = (provider, model, reason)
                self.unpriced[ukey] = self.unpriced.get(ukey, 0) + up

    def count_exporter(self, *, accepted: int = 0, duplicate: int = 0) -> None:
        with self.lock:
            self.exporter.accepted += accepted
            self.exporter.duplicate += duplicate

    def count_rejected(self, reason: str, n: int = 1) -> None:
        with self.lock:
            r = self.exporter.rejected
            r[reason] = r.get(reason, 0) + n

    # ---------------------------------------------------------------- reading

    def render_text(self) -> str:
        """Prometheus text format 0.0.4 of every family, from cached label strings."""
        lines: list[str] = []
        add = lines.append
        with self.lock:
            self._header(lines, "ai_requests", "counter")
            for rkey, r in self.requests.items():
                add(f"ai_requests_total{self.request_labels[rkey]} {float(r[0])!r}")
            self._header(lines, "ai_tokens", "counter")
            for s in self.series.values():
                lab = s.labels
                for t, v in zip(TOKEN_TYPES, s.tokens, strict=True):
                    add(f'ai_tokens_total{{type="{t}",{lab}}} {float(v)!r}')
            self._header(lines, "ai_server_tool_requests", "counter")
            for s in self.series.values():
                lab = s.labels
                for t, v in zip(SERVER_TOOL_TYPES, s.counts, strict=True):
                    add(f'ai_server_tool_requests_total{{type="{t}",{lab}}} {float(v)!r}')
            self._header(lines, "ai_cost", "counter")
            for s in self.series.values():
                lab = s.labels
                c = s.cost
                add(f'ai_cost_total{{type="input",{lab}}} {c[0] / NANO!r}')
                add(f'ai_cost_total{{type="output",{lab}}} {c[1] / NANO!r}')
                add(f'ai_cost_total{{type="total",{lab}}} {c[2] / NANO!r}')
            self._header(lines, "ai_requests_by_level", "counter")
            for level, n in self.levels.items():
                add(
                    f'ai_requests_by_level_total{{level="{escape_label_value(level)}"}} {float(n)!r}'
                )
            self._header(lines, "ai_average_duration_ms", "gauge")
            for service, (total_us, count) in self.avg_duration.items():
                add(
                    f'ai_average_duration_ms{{service="{escape_label_value(service)}"}} {total_us / count / 1000!r}'
                )
            self._histogram(lines, "ai_request_duration_seconds", "dur")
            self._histogram(lines, "ai_time_to_first_token_seconds", "ttft")
            self._header(lines, "ai_unpriced_requests", "counter")
            for (provider, model, reason), n in self.unpriced.items():
                add(
                    f'ai_unpriced_requests_total{{provider="{escape_label_value(provider)}",'
                    f'model="{escape_label_value(model)}",reason="{reason}"}} {float(n)!r}'
                )
            self._exporter_lines(lines)
        add("")
        return "\n".join(lines)

    @staticmethod
    def _header(lines: list[str], name: str, kind: str) -> None:
        # The text format names a counter family by its samples' `_total` name.
        exposed = f"{name}_total" if kind == "counter" else name
        lines.append(f"# HELP {exposed} {HELP[name]}")
        lines.append(f"# TYPE {exposed} {kind}")

    _BUCKET_LE = tuple(f'le="{floatToGoString(b)}"' for b in BUCKETS) + ('le="+Inf"',)

    def _histogram(self, lines: list[str], name: str, which: str) -> None:
        self._header(lines, name, "histogram")
        add = lines.append
        les = self._BUCKET_LE
        for s in self.series.values():
            count = s.dur_count if which == "dur" else s.ttft_count
            if not count:
                continue
            buckets = s.dur_buckets if which == "dur" else s.ttft_buckets
            total = (s.dur_sum if which == "dur" else s.ttft_sum) / 1e6
            lab = s.labels
            cumulative = 0
            for le, n in zip(les, buckets, strict=True):
                cumulative += n
                add(f"{name}_bucket{{{lab},{le}}} {float(cumulative)!r}")
            add(f"{name}_count{{{lab}}} {float(count)!r}")
            add(f"{name}_sum{{{lab}}} {float(total)!r}")

    def _exporter_lines(self, lines: list[str]) -> None:
        add = lines.append
        ex = self.exporter
        self._header(lines, "ai_exporter_events_accepted", "counter")
        add(f"ai_exporter_events_accepted_total {float(ex.accepted)!r}")
        self._header(lines, "ai_exporter_events_duplicate", "counter")
        add(f"ai_exporter_events_duplicate_total {float(ex.duplicate)!r}")
        self._header(lines, "ai_exporter_events_rejected", "counter")
        for reason, n in ex.rejected.items():
            add(
                f'ai_exporter_events_rejected_total{{reason="{escape_label_value(reason)}"}} {float(n)!r}'
            )
        self._header(lines, "ai_exporter_label_values_folded", "counter")
        for name, folder in self.folders.items():
            add(f'ai_exporter_label_values_folded_total{{label="{name}"}} {float(folder.folded)!r}')
        self._header(lines, "ai_exporter_build_info", "gauge")
        if self.build_info:
            names = sorted(self.build_info)
            add(
                f"ai_exporter_build_info{_labels_text(names, [self.build_info[n] for n in names])} 1.0"
            )

    def families(self) -> list[Metric]:
        """The same samples as MetricFamily objects, for a prometheus_client registry."""
        with self.lock:
            req = CounterMetricFamily(
                "ai_requests", HELP["ai_requests"], labels=self.request_labelnames
            )
            for rkey, r in self.requests.items():
                req.add_metric(rkey, r[0])
            names = self.series_labelnames
            tok = CounterMetricFamily("ai_tokens", HELP["ai_tokens"], labels=("type", *names))
            tools = CounterMetricFamily(
                "ai_server_tool_requests",
                HELP["ai_server_tool_requests"],
                labels=("type", *names),
            )
            cost = CounterMetricFamily("ai_cost", HELP["ai_cost"], labels=("type", *names))
            dur = HistogramMetricFamily(
                "ai_request_duration_seconds", HELP["ai_request_duration_seconds"], labels=names
            )
            ttft = HistogramMetricFamily(
                "ai_time_to_first_token_seconds",
                HELP["ai_time_to_first_token_seconds"],
                labels=names,
            )
            for skey, s in self.series.items():
                for t, v in zip(TOKEN_TYPES, s.tokens, strict=True):
                    tok.add_metric((t, *skey), v)
                for t, v in zip(SERVER_TOOL_TYPES, s.counts, strict=True):
                    tools.add_metric((t, *skey), v)
                for t, c in zip(COST_TYPES, s.cost, strict=True):
                    cost.add_metric((t, *skey), c / NANO)
                if s.dur_count:
                    dur.add_metric(skey, _cumulative(s.dur_buckets), s.dur_sum / 1e6)
                if s.ttft_count:
                    ttft.add_metric(skey, _cumulative(s.ttft_buckets), s.ttft_sum / 1e6)
            lvl = CounterMetricFamily(
                "ai_requests_by_level", HELP["ai_requests_by_level"], labels=("level",)
            )
            for level, n in self.levels.items():
                lvl.add_metric((level,), n)
            avg = GaugeMetricFamily(
                "ai_average_duration_ms", HELP["ai_average_duration_ms"], labels=("service",)
            )
            for service, (total_us, count) in self.avg_duration.items():
                avg.add_metric((service,), total_us / count / 1000)
            unpriced = CounterMetricFamily(
                "ai_unpriced_requests",
                HELP["ai_unpriced_requests"],
                labels=("provider", "model", "reason"),
            )
            for ukey, n in self.unpriced.items():
                unpriced.add_metric(ukey, n)
            ex = self.exporter
            acc = CounterMetricFamily(
                "ai_exporter_events_accepted", HELP["ai_exporter_events_accepted"]
            )
            acc.add_metric((), ex.accepted)
            dup = CounterMetricFamily(
                "ai_exporter_events_duplicate", HELP["ai_exporter_events_duplicate"]
            )
            dup.add_metric((), ex.duplicate)
            rej = CounterMetricFamily(
                "ai_exporter_events_rejected",
                HELP["ai_exporter_events_rejected"],
                labels=("reason",),
            )
            for reason, n in ex.rejected.items():
                rej.add_metric((reason,), n)
            folded = CounterMetricFamily(
                "ai_exporter_label_values_folded",
                HELP["ai_exporter_label_values_folded"],
                labels=("label",),
            )
            for name, folder in self.folders.items():
                folded.add_metric((name,), folder.folded)
            info_names = sorted(self.build_info)
            info = GaugeMetricFamily(
                "ai_exporter_build_info", HELP["ai_exporter_build_info"], labels=info_names
            )
            if info_names:
                info.add_metric([self.build_info[n] for n in info_names], 1)
        return [req, tok, tools, cost, lvl, avg, dur, ttft, unpriced, acc, dup, rej, folded, info]


def render_fleet(fleet: Mapping[str, Any]) -> str:
    """The `ai_fleet_*` gauges, text format 0.0.4, from `Ledger.fleet_totals()` (pure).

    Gauges, not counters, and under their own names: every member of a fleet serves
    the same values, and no one should add them to the per-instance `ai_*_total`.
    """
    totals = fleet["totals"]
    tokens = totals["tokens"]
    lines: list[str] = []
    add = lines.append

    def header(name: str) -> None:
        add(f"# HELP {name} {HELP[name]}")
        add(f"# TYPE {name} gauge")

    header("ai_fleet_requests")
    add(f"ai_fleet_requests {float(totals['requests'])!r}")
    header("ai_fleet_tokens")
    for t in TOKEN_TYPES:
        add(f'ai_fleet_tokens{{type="{t}"}} {float(tokens[f"{t}_tokens"])!r}')
    header("ai_fleet_server_tool_requests")
    for t, f in zip(SERVER_TOOL_TYPES, COUNT_FIELDS, strict=True):
        add(f'ai_fleet_server_tool_requests{{type="{t}"}} {float(totals[f])!r}')
    header("ai_fleet_cost_usd")
    for t in COST_TYPES:
        add(f'ai_fleet_cost_usd{{type="{t}"}} {float(totals["cost_usd"][t])!r}')
    header("ai_fleet_instances")
    live = [n for n in fleet["instances"] if n not in (RETIRED_INSTANCE, UNASSIGNED_INSTANCE)]
    add(f"ai_fleet_instances {float(len(live))!r}")
    add("")
    return "\n".join(lines)


def _cumulative(buckets: Sequence[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip((*BUCKETS, float("inf")), buckets, strict=True):
        running += n
        out.append((floatToGoString(bound), running))
    return out


class UsageCollector(Collector):
    """Registers the state in a prometheus_client registry.

    `skipping()` hides it for one thread while the fast renderer writes our families
    itself and `generate_latest` writes whatever else shares the registry.
    """

    def __init__(self, state: MetricsState) -> None:
        self.state = state
        self._tls = threading.local()

    def collect(self) -> Iterator[Metric]:
        if getattr(self._tls, "skip", False):
            return iter(())
        return iter(self.state.families())

    def describe(self) -> Iterator[Metric]:
        # Names only: the registry checks for clashes without us building every sample.
        empty = MetricsState(extra_labels=self.state.extra_labels)
        return iter(empty.families())

    @contextmanager
    def skipping(self) -> Iterator[None]:
        self._tls.skip = True
        try:
            yield
        finally:
            self._tls.skip = False
