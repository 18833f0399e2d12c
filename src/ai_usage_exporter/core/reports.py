"""Reports: per day, per query, per agent, per model, tenant or service.

One function builds each report's rows from ledger reads (`build_report`); the
renderers turn rows into text, JSON, CSV or Markdown, so the CLI and the HTTP
route give the same numbers. Key reports read the time buckets, never the
events; only `queries` and the per-step log of `agents --workflow` read events.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from ai_usage_exporter.core.rollup import NANO, STEPS, VALUE_COLUMNS
from ai_usage_exporter.core.shapes import TOKEN_FIELDS
from ai_usage_exporter.core.timeseries import ParamError, parse_time

REPORTS: tuple[str, ...] = ("daily", "queries", "agents", "models", "tenants", "services", "keys")
FORMATS: tuple[str, ...] = ("text", "json", "csv", "markdown")
DEFAULT_DAYS = 30
DAY = 86400

# Report name -> the bucket columns it groups by.
_KEYS: dict[str, tuple[str, ...]] = {
    "daily": ("bucket",),
    "models": ("provider", "model"),
    "tenants": ("tenant",),
    "services": ("service",),
    "keys": ("key",),
    "agents": ("agent", "task", "tool", "node", "operation"),
}
# What reports filter by: CLI flags and HTTP parameters of the same names, each an
# events and bucket column. The user is no bucket key: a report filtered by it sums
# the (retained) events.
FILTERS: tuple[str, ...] = ("service", "tenant", "model", "user")
ModelName = Callable[[str, str], str]
STEP_COLUMNS: tuple[str, ...] = (
    "ts",
    "step",
    "agent",
    "task",
    "tool",
    "node",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_total",
    "duration_ms",
    "status",
)


# The columns of one step of `agents --workflow` (see `_step_row`).
STEP_ROW_COLUMNS: tuple[str, ...] = (
    "n", "step", "time", "agent", "task", "tool", "node", "model", "total_tokens",
    "cost_usd", "duration_ms", "tokens_per_s", "status",
)  # fmt: skip


class ReportSource(Protocol):
    """The reads a report makes; `ledger.Ledger` extends it, so every ledger provides them.

    Declared here so the report shaping stays in the core, below the storage layer.
    """

    def bucket_sums(
        self,
        step: int,
        start: int,
        end: int,
        group_by: Sequence[str] = (),
        filters: Mapping[str, str | Sequence[str]] | None = None,
        instance: str | None = None,
        values: Sequence[str] = VALUE_COLUMNS,
    ) -> list[tuple[Any, ...]]: ...

    def event_sums(
        self,
        since: float,
        until: float,
        group_by: Sequence[str],
        filters: Mapping[str, str | Sequence[str]],
        instance: str | None = None,
        values: Sequence[str] = VALUE_COLUMNS,
    ) -> list[tuple[Any, ...]]: ...

    def served_models(self) -> list[tuple[str, str]]: ...

    def buckets_pruned_before(self) -> dict[int, int]: ...

    def select_events(
        self,
        columns: tuple[str, ...],
        filters: Mapping[str, str | Sequence[str]],
        since: float | None = None,
        until: float | None = None,
        limit: int = 10,
        instance: str | None = None,
    ) -> list[dict[str, Any]]: ...

    def query_sums(
        self,
        since: float,
        until: float,
        order: str = "cost",
        limit: int = 10,
        instance: str | None = None,
        filters: Mapping[str, str | Sequence[str]] | None = None,
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Window:
    since: int
    until: int


def window(since: str | None, until: str | None, now: float) -> Window:
    """The report's time range: by default the last 30 whole UTC days, today included.

    Given bounds are widened to whole minutes, the finest bucket.
    """
    end = parse_time("until", until, now) if until else (now // DAY + 1) * DAY
    start = parse_time("since", since, now) if since else end - DEFAULT_DAYS * DAY
    if start >= end:
        raise ParamError("since", since, f"must be before until ({_iso(end)})")
    return Window(int(start // 60) * 60, int(math.ceil(end / 60)) * 60)


# The bucket columns a report sums: the rest are histograms it never shows.
REPORT_VALUES: tuple[str, ...] = (
    "requests",
    *TOKEN_FIELDS,
    "cost_total_nusd",
    "duration_count",
    "duration_sum_us",
    "timed_requests",
    "timed_tokens",
    "timed_cost_nusd",
    "timed_duration_us",
    "unpriced",
)
_V = {name: i for i, name in enumerate(REPORT_VALUES)}
_REQUESTS, _COST, _DUR_COUNT, _DUR_SUM = (
    _V["requests"], _V["cost_total_nusd"], _V["duration_count"], _V["duration_sum_us"]
)  # fmt: skip


def measures(vec: Sequence[int], errors: int) -> dict[str, Any]:
    """The measures of every key report, from one summed vector of REPORT_VALUES.

    The rates (tokens/s, $/min) divide the tokens and cost of the events that have a
    duration by their duration, nothing else; `timed_requests` says how many those are.
    """
    tokens = {f: vec[_V[f]] for f in TOKEN_FIELDS}
    total = tokens["input_tokens"] + tokens["output_tokens"]
    cost = vec[_COST] / NANO
    seconds = vec[_DUR_SUM] / 1e6
    timed_s = vec[_V["timed_duration_us"]] / 1e6
    timed_cost = vec[_V["timed_cost_nusd"]] / NANO
    return {
        "requests": vec[_REQUESTS],
        "errors": errors,
        **tokens,
        "total_tokens": total,
        "cost_usd": cost,
        "duration_ms": round(seconds * 1000, 3),
        "avg_duration_ms": round(seconds * 1000 / vec[_DUR_COUNT], 3) if vec[_DUR_COUNT] else None,
        "tokens_per_s": round(vec[_V["timed_tokens"]] / timed_s, 3) if timed_s else None,
        "cost_per_min": round(timed_cost / (timed_s / 60), 9) if timed_s else None,
        "timed_requests": vec[_V["timed_requests"]],
        # Calls of a model with no price: their cost counts as 0, and tables say so.
        "unpriced_requests": vec[_V["unpriced"]],
    }


Tile = tuple[int, int, int]  # (step, first bucket start, end exclusive)


def plan(w: Window, pruned_before: Mapping[int, int]) -> tuple[Window, list[Tile]]:
    """The bucket ranges that sum to the window, widest step first where it fits.

    [since, until) is cut into whole days, the hours at its ends that are not whole
    days, and the minutes that are not whole hours. Where retention deleted a step's
    buckets (`pruned_before`: step -> time), that part is read from the next wider
    step instead, so the window widens to its boundaries: the returned window is the
    range the sums cover, `w` itself when nothing had to widen.
    """
    steps = sorted(STEPS.values())
    since, until = w.since, w.until
    for fine, wide in zip(steps, steps[1:], strict=False):
        cut = pruned_before.get(fine)
        if cut is None:
            continue
        # Before the first whole `wide` bucket after the cut, `fine` buckets may be gone.
        edge = -(-cut // wide) * wide
        if since % wide and since < edge:
            since -= since % wide
        if until % wide and until < edge:
            until += wide - until % wide
    return Window(since, until), _tile(since, until, steps[::-1])


def _tile(since: int, until: int, steps: Sequence[int]) -> list[Tile]:
    if since >= until:
        return []
    step, finer = steps[0], steps[1:]
    first, last = -(-since // step) * step, until // step * step
    if first >= last:
        return _tile(since, until, finer) if finer else [(step, since, until)]
    whole: list[Tile] = [(step, first, last)]
    if not finer:
        return whole
    return [*_tile(since, first, finer), *whole, *_tile(last, until, finer)]


def _grouped(
    ledger: ReportSource,
    name: str,
    w: Window,
    instance: str | None,
    filters: Mapping[str, str | Sequence[str]] | None = None,
    model_name: ModelName | None = None,
) -> tuple[Window, list[tuple[tuple[Any, ...], list[int], int]]]:
    """Bucket sums per key of the report (status folded into an error count), by cost.

    The daily report's key is the UTC day, so the hour and minute buckets that cover
    partial days add into their day's row. Returns the range the sums cover, too.
    With a user among `filters`, the events are summed instead (see `event_sums`).
    `model_name` gives the models report one row per model (see `canonical_model`).
    """
    keys = _KEYS[name]
    filters = filters or {}
    by_events = "user" in filters
    if by_events:
        covered, tiles = w, [(0, w.since, w.until)]
    elif w.since % DAY or w.until % DAY:
        covered, tiles = plan(w, ledger.buckets_pruned_before())
    else:
        covered, tiles = w, [(DAY, w.since, w.until)]
    merged: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
    n = len(keys)
    width = len(REPORT_VALUES)
    for step, start, end in tiles:
        if by_events:
            rows = ledger.event_sums(
                start, end, (*keys, "status"), filters, instance=instance, values=REPORT_VALUES
            )
        else:
            rows = ledger.bucket_sums(
                step, start, end, (*keys, "status"), filters, instance=instance,
                values=REPORT_VALUES,
            )  # fmt: skip
        for r in rows:
            if name == "daily":
                key: tuple[Any, ...] = (r[0] - r[0] % DAY,)
            elif name == "models" and model_name is not None:
                key = (r[0], model_name(r[0], r[1]))
            else:
                key = tuple(r[:n])
            acc = merged.get(key)
            if acc is None:
                acc = merged[key] = ([0] * width, [0])
            vec = acc[0]
            for i in range(width):
                vec[i] += r[n + 1 + i]
            if r[n] == "error":
                acc[1][0] += r[n + 1 + _REQUESTS]
    out = [(k, v, e[0]) for k, (v, e) in merged.items()]
    if name == "daily":
        out.sort(key=lambda t: t[0])
    else:
        out.sort(key=lambda t: (-t[1][_COST], -t[1][_REQUESTS], t[0]))
    return covered, out


def build_report(
    ledger: ReportSource,
    name: str,
    w: Window,
    *,
    workflow: str | None = None,
    limit: int = 100,
    order: str = "cost",
    instance: str | None = None,
    filters: Mapping[str, str] | None = None,
    model_name: ModelName | None = None,
    suggest: Callable[[str, str], str | None] | None = None,
) -> dict[str, Any]:
    """The report as JSON-ready data: {"report", "since", "until", "instance", "rows", ...}.

    `instance` restricts it to one instance's rows (see `Ledger.scope_instance`); None,
    the default, reports the whole ledger. `filters` (names of FILTERS) keep the calls
    matching each; `model_name` (the price book's `canonical_model`) makes a dated
    snapshot and its alias one model, in the rows and in the model filter. When calls
    in the range have no price, `unpriced` lists their models, each with a priced
    model of a close name (`suggest`, the price book's `suggest_model`) if there is one.
    """
    body: dict[str, Any] = {
        "report": name,
        "since": _iso(w.since),
        "until": _iso(w.until),
        "instance": instance,
    }
    given = {k: v for k, v in (filters or {}).items() if v is not None}
    if given:
        body["filters"] = dict(given)
    where = expand_filters(ledger, given, model_name)
    if name == "queries":
        rows = ledger.query_sums(
            w.since, w.until, order=order, limit=limit, instance=instance, filters=where
        )
        body["rows"] = [_query_row(r) for r in rows]
        return body
    covered, grouped = _grouped(ledger, name, w, instance, where, model_name)
    if covered != w:
        # Retention deleted the finer buckets an end of the range needed.
        body["since"], body["until"] = _iso(covered.since), _iso(covered.until)
        body["asked"] = {"since": _iso(w.since), "until": _iso(w.until)}
    if name == "daily":
        body["rows"] = [{"day": _iso(k[0])[:10], **measures(v, e)} for k, v, e in grouped]
    elif name == "agents":
        body["rows"] = _agent_tree(grouped)[:limit]
        nodes = _nodes(grouped)
        if nodes:
            body["nodes"] = nodes[:limit]
        body["summary"] = _performance(grouped)
        if workflow is not None:
            body["workflow"] = workflow
            steps = ledger.select_events(
                STEP_COLUMNS,
                {**where, "workflow_id": workflow},
                w.since,
                w.until,
                limit=10_000,
                instance=instance,
            )
            body["steps"] = [_step_row(i, s) for i, s in enumerate(reversed(steps), start=1)]
    else:
        keys = _KEYS[name]
        body["rows"] = [
            {**dict(zip(keys, k, strict=True)), **measures(v, e)} for k, v, e in grouped[:limit]
        ]
    if any(v[_V["unpriced"]] for _, v, _ in grouped):
        by_model = (
            grouped if name == "models" else _grouped(ledger, "models", w, instance, where)[1]
        )
        body["unpriced"] = [
            {
                "provider": p,
                "model": m,
                "requests": v[_V["unpriced"]],
                "did_you_mean": suggest(p, m) if suggest is not None else None,
            }
            for (p, m), v, _ in by_model
            if v[_V["unpriced"]]
        ]
    return body


def expand_filters(
    ledger: ReportSource, filters: Mapping[str, str], model_name: ModelName | None
) -> dict[str, str | Sequence[str]]:
    """The filters as the ledger applies them: a model becomes every name it was served
    under (`gpt-4o-mini` finds `gpt-4o-mini-2024-07-18` too), by the price book."""
    out: dict[str, str | Sequence[str]] = dict(filters)
    model = filters.get("model")
    if model is not None and model_name is not None:
        out["model"] = sorted(
            {model}
            | {m for p, m in ledger.served_models() if model_name(p, m) == model_name(p, model)}
        )
    return out


def _query_row(r: dict[str, Any]) -> dict[str, Any]:
    """One query: its own start, end, duration and text when its line gave them.

    Without them (calls posted one by one with a query_id) the query spans its first
    to its last call and lasts as long as its calls together.
    """
    calls_ms = float(r["duration_ms"] or 0)
    own_ms = r["query_duration_ms"]
    duration = float(own_ms) if own_ms is not None else calls_ms
    start = r["query_start"] if r["query_start"] is not None else r["first_ts"]
    end = r["query_end"] if r["query_end"] is not None else r["last_ts"]
    tokens = int(r["input_tokens"]) + int(r["output_tokens"])
    # The query's own duration spans all its calls; the calls' durations only theirs.
    if own_ms is not None:
        rate_tokens, timed = tokens, int(r["inferences"])
    else:
        rate_tokens, timed = int(r["timed_tokens"] or 0), int(r["timed_inferences"])
    # Summed as floats by the database: rounded to the nanodollar, the ledger's unit,
    # so 0.059812 does not print as 0.059812000000000004.
    cost = round(float(r["cost_usd"] or 0), 9)
    return {
        "query_id": r["query_id"],
        "user": r["user"],
        "start": _iso(float(start)),
        "end": _iso(float(end)),
        "inferences": int(r["inferences"]),
        "input_tokens": int(r["input_tokens"]),
        "output_tokens": int(r["output_tokens"]),
        "total_tokens": tokens,
        "cost_usd": cost,
        "duration_ms": round(duration, 3),
        "errors": int(r["errors"]),
        "tokens_per_s": round(rate_tokens / (duration / 1000), 3) if duration else None,
        "timed_inferences": timed,
        "inference_ms": round(calls_ms, 3),
        "text": r["query_text"],
    }


def _step_row(n: int, s: dict[str, Any]) -> dict[str, Any]:
    tokens = int(s["input_tokens"]) + int(s["output_tokens"])
    d = s["duration_ms"]
    return {
        "n": n,
        "step": s["step"],
        "time": _iso(float(s["ts"])),
        "agent": s["agent"],
        "task": s["task"],
        "tool": s["tool"],
        "node": s["node"],
        "model": s["model"],
        "total_tokens": tokens,
        "cost_usd": round(float(s["cost_total"]), 9),
        "duration_ms": d,
        "tokens_per_s": round(tokens / (d / 1000), 3) if d else None,
        "status": s["status"],
    }


def _agent_tree(grouped: list[tuple[tuple[Any, ...], list[int], int]]) -> list[dict[str, Any]]:
    """agent -> tasks -> tools, each level with the measures of everything under it.

    A call that names a node and no agent (an agent graph's query-summary line) is
    under its node: for such an app the nodes are the agents.
    """
    agents: dict[str, tuple[list[int], list[int], dict[str, Any]]] = {}
    for (agent, task, tool, node, _operation), vec, errors in grouped:
        a = agents.setdefault(agent or node, ([0] * len(vec), [0], {}))
        t = a[2].setdefault(task, ([0] * len(vec), [0], {}))
        _add(a, vec, errors)
        _add(t, vec, errors)
        leaf = t[2].setdefault(tool, ([0] * len(vec), [0], {}))
        _add(leaf, vec, errors)

    def level(items: dict[str, Any], name: str, child: str | None) -> list[dict[str, Any]]:
        out = []
        for key, (vec, err, children) in items.items():
            node = {name: key, **measures(vec, err[0])}
            if child is not None:
                node[child + "s"] = level(children, child, "tool" if child == "task" else None)
            out.append(node)
        out.sort(key=lambda n: (-n["cost_usd"], -n["requests"], n[name]))
        return out

    return level(agents, "agent", "task")


def _nodes(grouped: list[tuple[tuple[Any, ...], list[int], int]]) -> list[dict[str, Any]]:
    """Per node and inference type (the `operation`), for calls that name a node."""
    acc: dict[tuple[str, str], tuple[list[int], list[int], Any]] = {}
    for (_a, _t, _tool, node, operation), vec, errors in grouped:
        if node:
            _add(acc.setdefault((node, operation), ([0] * len(vec), [0], None)), vec, errors)
    rows = [
        {"node": node, "inference_type": op, **measures(v, e[0])}
        for (node, op), (v, e, _) in acc.items()
    ]
    rows.sort(key=lambda r: (-r["cost_usd"], -r["requests"], r["node"], r["inference_type"]))
    return rows


def _add(acc: tuple[list[int], list[int], Any], vec: list[int], errors: int) -> None:
    for i, v in enumerate(vec):
        acc[0][i] += v
    acc[1][0] += errors


def _performance(grouped: list[tuple[tuple[Any, ...], list[int], int]]) -> dict[str, Any]:
    total = [0] * (len(grouped[0][1]) if grouped else 0)
    errors = 0
    for _, vec, e in grouped:
        for i, v in enumerate(vec):
            total[i] += v
        errors += e
    if not total:
        return {}
    m = measures(total, errors)
    return {
        "requests": m["requests"],
        "total_tokens": m["total_tokens"],
        "cost_usd": m["cost_usd"],
        # Output tokens per input token: how much answer each token of context bought.
        "token_efficiency": round(m["output_tokens"] / m["input_tokens"], 4)
        if m["input_tokens"]
        else None,
        "tokens_per_s": m["tokens_per_s"],
        "cost_per_min": m["cost_per_min"],
        "timed_requests": m["timed_requests"],
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- rendering


def flat_rows(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for a table (CSV, Markdown, text): the agent tree becomes one row per tool."""
    if body["report"] != "agents":
        return list(body["rows"])
    out = []
    for a in body["rows"]:
        for t in a["tasks"]:
            for tool in t["tools"]:
                out.append({"agent": a["agent"], "task": t["task"], **tool})
    return out


def render(body: dict[str, Any], fmt: str) -> str:
    renderer: dict[str, Callable[[dict[str, Any]], str]] = {
        "json": lambda b: orjson.dumps(b, option=orjson.OPT_INDENT_2).decode() + "\n",
        "csv": render_csv,
        "markdown": render_markdown,
        "text": render_text,
    }
    return renderer[fmt](body)


def render_csv(body: dict[str, Any]) -> str:
    """One CSV table: the report's rows, or for `agents --workflow` the step log."""
    if body.get("workflow") is not None:
        rows, columns = body["steps"], list(STEP_ROW_COLUMNS)
    else:
        rows = flat_rows(body)
        columns = _columns(rows, body["report"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
    return buf.getvalue()


def _columns(rows: list[dict[str, Any]], report: str) -> list[str]:
    if rows:
        return [k for k in rows[0] if not isinstance(rows[0][k], list)]
    return {"daily": ["day"], "queries": ["query_id"]}.get(report, [report.rstrip("s")])


def cell(v: Any) -> str:
    """One value as a table shows it: thousands separators, money to 6 places, '-' for none."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:.6f}" if abs(v) < 1 else f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v) if v != "" else "-"


_SHORT = ("requests", "errors", "input_tokens", "cached_input_tokens", "output_tokens",
          "total_tokens", "cost_usd", "duration_ms", "tokens_per_s", "cost_per_min")  # fmt: skip


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[list[str]]:
    return [columns] + [
        [_cost_cell(r) if c == "cost_usd" else cell(r.get(c)) for c in columns] for r in rows
    ]


def _cost_cell(m: Mapping[str, Any]) -> str:
    """The cost, marked when calls of it have no price (they count as $0)."""
    unpriced = m.get("unpriced_requests") or 0
    if unpriced and unpriced == m.get("requests"):
        return "unpriced"
    text = cell(m.get("cost_usd"))
    return f"{text} (+{unpriced:,} unpriced)" if unpriced else text


def _unpriced_note(body: dict[str, Any]) -> list[str]:
    """Lines naming the models without a price, and what each may have meant."""
    out = []
    for u in body.get("unpriced") or ():
        hint = f"; did you mean {u['did_you_mean']!r}?" if u["did_you_mean"] else ""
        out.append(
            f"{u['requests']:,} calls of {u['provider']}/{u['model']} have no price and "
            f"count as $0{hint} (see `ai-usage-exporter prices`, docs/pricing.md)"
        )
    return out


def _empty_note(body: dict[str, Any]) -> str:
    return f"no calls in {body['since']} .. {body['until']}" + (
        f" matching {', '.join(f'{k}={v}' for k, v in body['filters'].items())}"
        if body.get("filters")
        else ""
    )


def render_markdown(body: dict[str, Any]) -> str:
    rows = flat_rows(body)
    cols = _columns(rows, body["report"])
    table = _table(rows, cols)
    lines = [f"## {body['report']} {body['since']} .. {body['until']}", ""]
    if rows:
        lines.append("| " + " | ".join(table[0]) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in table[1:]]
    else:
        lines.append(_empty_note(body))
    if body.get("unpriced"):
        lines += ["", *(f"- {n}" for n in _unpriced_note(body))]
    if body.get("nodes"):
        node_cols = _columns(body["nodes"], "nodes")
        nodes = _table(body["nodes"], node_cols)
        lines += ["", "### by node", ""]
        lines.append("| " + " | ".join(nodes[0]) + " |")
        lines.append("|" + "|".join("---" for _ in node_cols) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in nodes[1:]]
    if body.get("workflow") is not None:
        lines += ["", f"### execution log, workflow {body['workflow']}", ""]
        steps = _table(body["steps"], list(STEP_ROW_COLUMNS))
        lines.append("| " + " | ".join(steps[0]) + " |")
        lines.append("|" + "|".join("---" for _ in STEP_ROW_COLUMNS) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in steps[1:]]
        if not body["steps"]:
            lines += ["", "no events of this workflow in the range"]
    return "\n".join(lines) + "\n"


def render_text(body: dict[str, Any]) -> str:
    """A block like the summaries apps write to their logs: a title, aligned columns."""
    name = body["report"]
    lines = [f"===== {name} report: {body['since']} .. {body['until']} ====="]
    if "asked" in body:
        lines.append(
            f"(asked {body['asked']['since']} .. {body['asked']['until']}; retention kept "
            "only coarser buckets at an end, so the range is widened to them)"
        )
    if not body["rows"]:
        # A bare header would read as "the report ran and found nothing wrong".
        lines.append(_empty_note(body))
    if name == "agents":
        for a in body["rows"]:
            lines.append(f"Agent {a['agent'] or '-'}: {_line(a)}")
            for t in a["tasks"]:
                lines.append(f"  Task {t['task'] or '-'}: {_line(t)}")
                for tool in t["tools"]:
                    lines.append(f"    Tool {tool['tool'] or '-'}: {_line(tool)}")
        if body.get("nodes"):
            lines.append("----- by node -----")
            for nd in body["nodes"]:
                lines.append(f"Node {nd['node']} ({nd['inference_type'] or '-'}): {_line(nd)}")
        if body.get("workflow") is not None and not body.get("steps"):
            # Asked for a workflow's log and got nothing: say so, or a typo reads as success.
            lines.append(
                f"----- execution log, workflow {body['workflow']}: no events in this range -----"
            )
        if body.get("steps"):
            lines.append(f"----- execution log, workflow {body['workflow']} -----")
            for s in body["steps"]:
                lines.append(
                    f"Step {s['n']}: {s['agent'] or '-'} - {s['task'] or '-'}: "
                    f"{s['total_tokens']:,} tokens, {cell(s['duration_ms'])} ms, "
                    f"{cell(s['tokens_per_s'])} tokens/s, {s['status']}"
                )
        p = body.get("summary") or {}
        if p:
            lines.append("----- performance -----")
            lines.append(
                f"{p['requests']:,} calls, {p['total_tokens']:,} tokens, ${p['cost_usd']:.6f}; "
                f"token efficiency (output/input) {cell(p['token_efficiency'])}, "
                f"{cell(p['tokens_per_s'])} tokens/s, ${cell(p['cost_per_min'])}/min" + _timed(p)
            )
        return "\n".join([*lines, *_unpriced_note(body)]) + "\n"
    rows = flat_rows(body)
    if not rows:
        return "\n".join(lines) + "\n"
    cols = _columns(rows, name)
    if name != "queries":
        cols = [c for c in cols if c in _SHORT or c not in _MEASURE_NAMES]
        if all(r["timed_requests"] == r["requests"] for r in rows):
            cols = [c for c in cols if c != "timed_requests"]  # the rates cover every call
    table = _table(rows, cols)
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    for r in table:
        lines.append(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join([*lines, *_unpriced_note(body)]) + "\n"


def _line(m: dict[str, Any]) -> str:
    cost = _cost_cell(m)
    return (
        f"{m['requests']:,} calls, {m['input_tokens']:,} in / {m['output_tokens']:,} out tokens, "
        f"{cost if cost == 'unpriced' else '$' + cost}, "
        f"{cell(m['duration_ms']) if m['duration_ms'] else '-'} ms, "
        f"{cell(m['tokens_per_s'])} tokens/s, ${cell(m['cost_per_min'])}/min" + _timed(m)
    )


def _timed(m: dict[str, Any]) -> str:
    """What the rates cover, when it is not every call."""
    n, timed = m["requests"], m["timed_requests"]
    return "" if timed == n else f" ({timed:,} of {n:,} calls timed)"


_MEASURE_NAMES = frozenset(
    (*TOKEN_FIELDS, "avg_duration_ms", "requests", "errors", "unpriced_requests")
)
