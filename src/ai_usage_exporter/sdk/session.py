"""Session reports: `with session() as s: ...` collects a run's calls for a summary.

The events are kept as emitted and priced only when a report is asked for, so a
session costs the calls inside it one list append each.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from contextvars import Token
from typing import Any

import orjson

from ai_usage_exporter.core.events.model import EventError
from ai_usage_exporter.core.events.parse import parse_events
from ai_usage_exporter.core.shapes import TOKEN_FIELDS
from ai_usage_exporter.sdk.context import _sessions
from ai_usage_exporter.sdk.hub import _hub, prepare

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("by_model", ("provider", "model")),
    ("by_agent", ("agent",)),
    ("by_task", ("task",)),
    ("by_tool", ("tool",)),
)


class Session:
    """The calls recorded while this session was active, and reports on them."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.started_at = time.time()
        self.ended_at: float | None = None
        self._token: Token[tuple[Session, ...]] | None = None

    def __enter__(self) -> Session:
        self.started_at = time.time()
        self._token = _sessions.set((*_sessions.get(), self))
        with _hub.lock:
            _hub.sessions_active += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended_at = time.time()
        if self._token is not None:
            _sessions.reset(self._token)
            self._token = None
        with _hub.lock:
            _hub.sessions_active -= 1

    # ---------------------------------------------------------------- reports

    def _priced(self) -> Iterator[tuple[dict[str, Any], Any, float]]:
        prices = _hub.prices()
        for raw in list(self.events):
            try:
                (e,) = parse_events([prepare(raw)])
            except (EventError, ValueError):
                continue
            yield raw, e, prices.price(e).total

    def summary(self) -> dict[str, Any]:
        """Totals, and per model, agent, task and tool: tokens by type, cost, time, rates."""
        end = self.ended_at if self.ended_at is not None else time.time()
        wall = max(end - self.started_at, 1e-9)
        totals = _Acc()
        groups: dict[str, dict[tuple[str, ...], _Acc]] = {g: {} for g, _ in GROUPS}
        tree: dict[tuple[str, str, str], _Acc] = {}
        for _raw, e, cost in self._priced():
            totals.add(e, cost)
            for name, dims in GROUPS:
                key = tuple(str(getattr(e, d) or "") for d in dims)
                groups[name].setdefault(key, _Acc()).add(e, cost)
            tkey = (e.agent or "", e.task or "", e.tool or "")
            tree.setdefault(tkey, _Acc()).add(e, cost)
        out: dict[str, Any] = {
            "session": self.name,
            "wall_seconds": round(wall, 6),
            "totals": totals.as_dict(wall),
        }
        for name, dims in GROUPS:
            rows = []
            for key, acc in sorted(groups[name].items(), key=lambda kv: -kv[1].cost):
                rows.append({**dict(zip(dims, key, strict=True)), **acc.as_dict(wall)})
            out[name] = rows
        out["tree"] = [
            {"agent": a, "task": t, "tool": tl, **acc.as_dict(wall)}
            for (a, t, tl), acc in sorted(tree.items())
        ]
        return out

    def to_json(self) -> str:
        return orjson.dumps(self.summary(), option=orjson.OPT_INDENT_2).decode()

    def to_csv(self) -> str:
        """One row per group (total, model, agent, task, tool) with every figure."""
        s = self.summary()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        tokens = [*TOKEN_FIELDS, "total_tokens"]
        w.writerow(
            ["group", "key", "requests", "errors", *tokens, "cost_usd", "duration_seconds",
             "tokens_per_second", "cost_per_minute_usd"]
        )  # fmt: skip

        def row(group: str, key: str, d: dict[str, Any]) -> None:
            w.writerow(
                [group, key, d["requests"], d["errors"], *(d["tokens"][t] for t in tokens),
                 d["cost_usd"], d["duration_seconds"], d["tokens_per_second"],
                 d["cost_per_minute_usd"]]
            )  # fmt: skip

        row("total", "", s["totals"])
        for name, dims in GROUPS:
            for d in s[name]:
                row(name.removeprefix("by_"), "/".join(d[k] for k in dims), d)
        return buf.getvalue()

    def display(self, file: Any = None) -> str:
        """A readable report: totals, per model, and the agent > task > tool tree."""
        s = self.summary()
        t = s["totals"]
        lines = [
            f"Session {self.name or ''}".rstrip()
            + f": {t['requests']} calls, {_line(t)}, wall {s['wall_seconds']:.1f} s",
            "Models:",
        ]
        for d in s["by_model"]:
            lines.append(f"  {d['provider']}/{d['model']}: {d['requests']} calls, {_line(d)}")
        lines.append("Agents:")
        last_agent = last_task = None
        for d in s["tree"]:
            agent, task, tool = d["agent"] or "(none)", d["task"], d["tool"]
            if agent != last_agent:
                a = next(x for x in s["by_agent"] if (x["agent"] or "(none)") == agent)
                lines.append(f"  {agent}: {a['requests']} calls, {_line(a)}")
                last_agent, last_task = agent, None
            if task and task != last_task:
                lines.append(f"    └─ task {task}")
                last_task = task
            label = f"tool {tool}" if tool else "(no tool)"
            indent = "        " if task else "      "
            lines.append(f"{indent}└─ {label}: {d['requests']} calls, {_line(d)}")
        text = "\n".join(lines)
        print(text, file=file)
        return text


def _line(d: dict[str, Any]) -> str:
    tok = d["tokens"]
    return (
        f"{tok['total_tokens']:,} tokens (in {tok['input_tokens']:,}, out {tok['output_tokens']:,}), "
        f"${d['cost_usd']:.6f}, {d['duration_seconds']:.2f} s, {d['tokens_per_second']:.1f} tok/s"
    )


class _Acc:
    __slots__ = ("requests", "errors", "tokens", "cost", "duration_ms")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.tokens = dict.fromkeys(TOKEN_FIELDS, 0)
        self.cost = 0.0
        self.duration_ms = 0.0

    def add(self, e: Any, cost: float) -> None:
        self.requests += 1
        if e.status == "error":
            self.errors += 1
        for f in TOKEN_FIELDS:
            self.tokens[f] += getattr(e, f)
        self.cost += cost
        self.duration_ms += e.duration_ms or 0.0

    def as_dict(self, wall_seconds: float) -> dict[str, Any]:
        seconds = self.duration_ms / 1000.0
        total = self.tokens["input_tokens"] + self.tokens["output_tokens"]
        return {
            "requests": self.requests,
            "errors": self.errors,
            "tokens": {**self.tokens, "total_tokens": total},
            "cost_usd": self.cost,
            "duration_seconds": round(seconds, 6),
            # Output tokens per second of call time: the generation speed callers feel.
            "tokens_per_second": self.tokens["output_tokens"] / seconds if seconds else 0.0,
            "cost_per_minute_usd": self.cost / (wall_seconds / 60.0),
        }


def session(name: str | None = None) -> Session:
    """A context manager collecting every call recorded inside it (nesting allowed)."""
    return Session(name)
