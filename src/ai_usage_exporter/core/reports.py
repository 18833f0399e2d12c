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
    "agents": ("agent", "task", "tool"),
}
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
        filters: Mapping[str, str] | None = None,
        instance: str | None = None,
        values: Sequence[str] = VALUE_COLUMNS,
    ) -> list[tuple[Any, ...]]: ...

    def buckets_pruned_before(self) -> dict[int, int]: ...

    def select_events(
        self,
        columns: tuple[str, ...],
        filters: Mapping[str, str],
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


# The bucket columns a report sums (of the 48): the rest are histograms it never shows.
REPORT_VALUES: tuple[str, ...] = (
    "requests",
    *TOKEN_FIELDS,
    "cost_total_nusd",
    "duration_count",
    "duration_sum_us",
)
_V = {name: i for i, name in enumerate(REPORT_VALUES)}
_REQUESTS, _COST, _DUR_COUNT, _DUR_SUM = (
    _V["requests"], _V["cost_total_nusd"], _V["duration_count"], _V["duration_sum_us"]
)  # fmt: skip


def measures(vec: Sequence[int], errors: int) -> dict[str, Any]:
    """The measures of every key report, from one summed vector of REPORT_VALUES."""
    tokens = {f: vec[_V[f]] for f in TOKEN_FIELDS}
    total = tokens["input_tokens"] + tokens["output_tokens"]
    cost = vec[_COST] / NANO
    seconds = vec[_DUR_SUM] / 1e6
    return {
        "requests": vec[_REQUESTS],
        "errors": errors,
        **tokens,
        "total_tokens": total,
        "cost_usd": cost,
        "duration_ms": round(seconds * 1000, 3),
        "avg_duration_ms": round(seconds * 1000 / vec[_DUR_COUNT], 3) if vec[_DUR_COUNT] else None,
        "tokens_per_s": round(total / seconds, 3) if seconds else None,
        "cost_per_min": cost / (seconds / 60) if seconds else None,
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
    ledger: ReportSource, name: str, w: Window, instance: str | None
) -> tuple[Window, list[tuple[tuple[Any, ...], list[int], int]]]:
    """Bucket sums per key of the report (status folded into an error count), by cost.

    The daily report's key is the UTC day, so the hour and minute buckets that cover
    partial days add into their day's row. Returns the range the sums cover, too.
    """
    keys = _KEYS[name]
    if w.since % DAY or w.until % DAY:
        covered, tiles = plan(w, ledger.buckets_pruned_before())
    else:
        covered, tiles = w, [(DAY, w.since, w.until)]
    merged: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
    n = len(keys)
    width = len(REPORT_VALUES)
    for step, start, end in tiles:
        rows = ledger.bucket_sums(
            step, start, end, (*keys, "status"), instance=instance, values=REPORT_VALUES
        )
        for r in rows:
            key = (r[0] - r[0] % DAY,) if name == "daily" else tuple(r[:n])
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
) -> dict[str, Any]:
    """The report as JSON-ready data: {"report", "since", "until", "instance", "rows", ...}.

    `instance` restricts it to one instance's rows (see `Ledger.scope_instance`); None,
    the default, reports the whole ledger.
    """
    body: dict[str, Any] = {
        "report": name,
        "since": _iso(w.since),
        "until": _iso(w.until),
        "instance": instance,
    }
    if name == "queries":
        rows = ledger.query_sums(w.since, w.until, order=order, limit=limit, instance=instance)
        body["rows"] = [_query_row(r) for r in rows]
        return body
    covered, grouped = _grouped(ledger, name, w, instance)
    if covered != w:
        # Retention deleted the finer buckets an end of the range needed.
        body["since"], body["until"] = _iso(covered.since), _iso(covered.until)
        body["asked"] = {"since": _iso(w.since), "until": _iso(w.until)}
    if name == "daily":
        body["rows"] = [{"day": _iso(k[0])[:10], **measures(v, e)} for k, v, e in grouped]
    elif name == "agents":
        body["rows"] = _agent_tree(grouped)
        body["summary"] = _performance(grouped)
        if workflow is not None:
            body["workflow"] = workflow
            steps = ledger.select_events(
                STEP_COLUMNS,
                {"workflow_id": workflow},
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
    return body


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
    cost = float(r["cost_usd"] or 0)
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
        "tokens_per_s": round(tokens / (duration / 1000), 3) if duration else None,
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
        "model": s["model"],
        "total_tokens": tokens,
        "cost_usd": float(s["cost_total"]),
        "duration_ms": d,
        "tokens_per_s": round(tokens / (d / 1000), 3) if d else None,
        "status": s["status"],
    }


def _agent_tree(grouped: list[tuple[tuple[Any, ...], list[int], int]]) -> list[dict[str, Any]]:
    """agent -> tasks -> tools, each level with the measures of everything under it."""
    agents: dict[str, tuple[list[int], list[int], dict[str, Any]]] = {}
    for (agent, task, tool), vec, errors in grouped:
        a = agents.setdefault(agent, ([0] * len(vec), [0], {}))
        t = a[2].setdefault(task, ([0] * len(vec), [0], {}))
        _add(a, vec, errors)
        _add(t, vec, errors)
        t[2][tool] = (vec, [errors], {})

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
    rows = flat_rows(body)
    buf = io.StringIO()
    columns = _columns(rows, body["report"])
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


_SHORT = ("requests", "errors", "input_tokens", "output_tokens", "total_tokens", "cost_usd",
          "duration_ms", "tokens_per_s", "cost_per_min")  # fmt: skip


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[list[str]]:
    return [columns] + [[cell(r.get(c)) for c in columns] for r in rows]


def render_markdown(body: dict[str, Any]) -> str:
    rows = flat_rows(body)
    cols = _columns(rows, body["report"])
    table = _table(rows, cols)
    lines = [f"## {body['report']} {body['since']} .. {body['until']}", ""]
    lines.append("| " + " | ".join(table[0]) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in table[1:]]
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
    if name == "agents":
        for a in body["rows"]:
            lines.append(f"Agent {a['agent'] or '-'}: {_line(a)}")
            for t in a["tasks"]:
                lines.append(f"  Task {t['task'] or '-'}: {_line(t)}")
                for tool in t["tools"]:
                    lines.append(f"    Tool {tool['tool'] or '-'}: {_line(tool)}")
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
                f"{cell(p['tokens_per_s'])} tokens/s, ${cell(p['cost_per_min'])}/min"
            )
        return "\n".join(lines) + "\n"
    rows = flat_rows(body)
    cols = _columns(rows, name)
    if name != "queries":
        cols = [c for c in cols if c in _SHORT or c not in _MEASURE_NAMES]
    table = _table(rows, cols)
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    for r in table:
        lines.append(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines) + "\n"


def _line(m: dict[str, Any]) -> str:
    return (
        f"{m['requests']:,} calls, {m['input_tokens']:,} in / {m['output_tokens']:,} out tokens, "
        f"${m['cost_usd']:.6f}, {cell(m['duration_ms'])} ms, "
        f"{cell(m['tokens_per_s'])} tokens/s, ${cell(m['cost_per_min'])}/min"
    )


_MEASURE_NAMES = frozenset((*TOKEN_FIELDS, "avg_duration_ms", "requests", "errors"))
