"""The usage log the recorder writes: one JSON line per committed event, rotated by size.

`import` reads it back to the same totals; the `#` summary blocks are for people.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import orjson

from ai_usage_exporter.core.events.model import UsageEvent, event_fields


class UsageLog:
    """Appends one JSON line per accepted event, and a summary block per query; rotates by size.

    Its lines are flat events that `import` reads back to the same totals; the
    summary blocks are `#` comment lines that `import` skips.
    """

    def __init__(self, path: str, max_bytes: int = 100 * 1024 * 1024, backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fh = open(path, "ab")  # noqa: SIM115 - open for the recorder's lifetime
        self._lock = threading.Lock()

    def write(self, events: list[UsageEvent], costs: list[float]) -> None:
        if not events:
            return
        chunks = [orjson.dumps(_log_fields(e)) + b"\n" for e in events]
        chunks += [b"\n".join(summary_block(evs)) + b"\n" for evs in _by_query(events, costs)]
        data = b"".join(chunks)
        with self._lock:
            if self._fh.tell() and self._fh.tell() + len(data) > self.max_bytes:
                self._rotate()
            self._fh.write(data)
            self._fh.flush()

    def _rotate(self) -> None:
        self._fh.close()
        if self.backups:
            for i in range(self.backups - 1, 0, -1):
                if os.path.exists(f"{self.path}.{i}"):
                    os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.remove(self.path)
        self._fh = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def _log_fields(e: UsageEvent) -> dict[str, Any]:
    out = event_fields(e)
    out["timestamp"] = e.timestamp
    return out


def _by_query(
    events: list[UsageEvent], costs: list[float]
) -> Iterator[list[tuple[UsageEvent, float]]]:
    groups: dict[str, list[tuple[UsageEvent, float]]] = {}
    for e, c in zip(events, costs, strict=True):
        key = e.query_id or e.workflow_id
        if key is not None:
            groups.setdefault(key, []).append((e, c))
    yield from groups.values()


def summary_block(evs: list[tuple[UsageEvent, float]]) -> list[bytes]:
    """The readable block for one query or workflow's events, as `#` comment lines."""
    first = evs[0][0]
    name = f"query {first.query_id}" if first.query_id else f"workflow {first.workflow_id}"
    who = f" user {first.user}" if first.user else ""
    tin = sum(e.input_tokens for e, _ in evs)
    tout = sum(e.output_tokens for e, _ in evs)
    cost = sum(c for _, c in evs)
    dur = sum(e.duration_ms or 0 for e, _ in evs)
    lines = [f"# ===== {name}{who} ====="]
    for i, (e, c) in enumerate(evs, start=1):
        what = " - ".join(x for x in (e.agent, e.task, e.node, e.tool) if x) or e.operation
        lines.append(
            f"# step {i}: {what} {e.provider}/{e.model}: {e.input_tokens} in / "
            f"{e.output_tokens} out tokens, ${c:.6f}, {e.duration_ms or 0:.0f} ms, {e.status}"
        )
    lines.append(
        f"# total: {len(evs)} calls, {tin} in / {tout} out tokens, ${cost:.6f}, {dur:.0f} ms"
    )
    return [line.encode() for line in lines]
