"""Usage log files: reading them into the ledger (`import`), and writing our own.

Import reads lines of the query-summary JSON (bare, or after a `TOKEN_USAGE`
marker or any logging prefix), JSON lines of flat events, and CSV with a header
of event fields. A line without an idempotency key gets one derived from its
content, so importing a file twice counts it once; a checkpoint (file, inode,
offset) in the ledger's meta table lets an interrupted import resume. Every
line goes through the same parse -> price -> commit path as a posted event.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from .config import Settings
from .events import EVENT_FIELDS, TOKEN_ALIASES, TOKEN_FIELDS, EventError, UsageEvent, event_fields

BATCH_LINES = 5000
MAX_REJECTS_SHOWN = 20
_INT_FIELDS = frozenset((*TOKEN_FIELDS, *TOKEN_ALIASES, "total_tokens"))
_FLOAT_FIELDS = frozenset(("duration_ms", "ttft_ms", "cost_usd"))


@dataclass
class ImportStats:
    read: int = 0
    accepted: int = 0  # events committed (a summary line may hold several)
    duplicate: int = 0
    rejected: int = 0
    skipped: int = 0  # blank and comment lines
    rejects: list[tuple[str, int, str]] = field(default_factory=list)

    def reject(self, path: str, lineno: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejects) < MAX_REJECTS_SHOWN:
            self.rejects.append((path, lineno, reason))

    def summary(self) -> str:
        lines = [
            f"lines read {self.read}, events accepted {self.accepted}, duplicate "
            f"{self.duplicate}, lines rejected {self.rejected}, skipped {self.skipped}"
        ]
        for path, lineno, reason in self.rejects:
            lines.append(f"  {path}:{lineno}: {reason}")
        if self.rejected > len(self.rejects):
            lines.append(f"  ... and {self.rejected - len(self.rejects)} more")
        return "\n".join(lines)


class LineError(ValueError):
    """One line cannot be read as an event."""


def content_key(obj: Mapping[str, Any]) -> str:
    """An idempotency key from a line's content: the same event text gives the same key."""
    digest = hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    if obj.get("event") == "token_usage_summary" and isinstance(obj.get("query_id"), str):
        # Per inference, the parser appends #0, #1, ... to this.
        return f"import:{obj['query_id']}:{digest}"
    return f"import:{digest}"


def parse_json_line(line: bytes) -> dict[str, Any] | None:
    """The event object of a log line, with a key; None for a blank or comment line."""
    text = line.strip()
    if not text or text.startswith(b"#"):
        return None
    start = text.find(b"{")
    if start < 0:
        raise LineError("no JSON object on the line")
    try:
        obj = orjson.loads(text[start:])
    except orjson.JSONDecodeError as exc:
        raise LineError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LineError("the JSON is not an object")
    if "idempotency_key" not in obj:
        obj["idempotency_key"] = content_key(obj)
    return obj


def csv_header(line: bytes) -> list[str] | None:
    """The field names when `line` is a CSV header of event fields, else None."""
    text = line.decode("utf-8", "replace").strip().lstrip("\ufeff")
    if not text or "{" in text or "," not in text:
        return None
    names = next(csv.reader([text]))
    allowed = EVENT_FIELDS | {"total_tokens"}
    return names if all(n in allowed for n in names) and "provider" in names else None


def parse_csv_line(line: bytes, header: list[str]) -> dict[str, Any] | None:
    text = line.decode("utf-8", "strict").rstrip("\r\n")
    if not text.strip():
        return None
    values = next(csv.reader([text]))
    if len(values) != len(header):
        raise LineError(f"{len(values)} fields where the header has {len(header)}")
    obj: dict[str, Any] = {}
    for name, value in zip(header, values, strict=True):
        if value == "":
            continue
        try:
            if name in _INT_FIELDS:
                obj[name] = int(value)
            elif name in _FLOAT_FIELDS:
                obj[name] = float(value)
            elif name == "timestamp":
                obj[name] = float(value) if value.replace(".", "", 1).isdigit() else value
            elif name == "metadata":
                obj[name] = orjson.loads(value)
            else:
                obj[name] = value
        except (ValueError, orjson.JSONDecodeError):
            raise LineError(f"{name}: cannot read {value!r}") from None
    if "idempotency_key" not in obj:
        obj["idempotency_key"] = content_key(obj)
    return obj


@dataclass
class _Source:
    """One file being read: where we are, and how to read its lines."""

    path: str
    fh: IO[bytes] | None = None
    inode: int = 0
    offset: int = 0
    lineno: int = 0
    header: list[str] | None = None
    partial: bytes = b""

    @property
    def meta_key(self) -> str:
        return f"import:{os.path.realpath(self.path)}"


def _open(src: _Source, resume: dict[str, Any] | None) -> None:
    fh = open(src.path, "rb")  # noqa: SIM115 - kept open while following
    st = os.fstat(fh.fileno())
    src.fh, src.inode = fh, st.st_ino
    src.offset = src.lineno = 0
    src.header, src.partial = None, b""
    if resume and resume.get("inode") == st.st_ino and int(resume.get("offset", 0)) <= st.st_size:
        src.offset = int(resume["offset"])
        src.lineno = int(resume.get("line", 0))
        src.header = resume.get("header")
        fh.seek(src.offset)


def _read_lines(src: _Source, max_lines: int) -> list[tuple[int, bytes]]:
    """Up to `max_lines` whole lines from the current position; a partial last line waits."""
    assert src.fh is not None
    out: list[tuple[int, bytes]] = []
    while len(out) < max_lines:
        line = src.fh.readline()
        if not line:
            break
        if not line.endswith(b"\n"):
            src.partial += line
            break
        if src.partial:
            line, src.partial = src.partial + line, b""
        src.lineno += 1
        src.offset += len(line)
        out.append((src.lineno, line))
    return out


def _items(
    src: _Source, lines: list[tuple[int, bytes]], stats: ImportStats
) -> list[tuple[int, dict[str, Any]]]:
    items: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in lines:
        stats.read += 1
        if lineno == 1 and src.header is None:
            header = csv_header(line)
            if header is not None:
                src.header = header
                stats.skipped += 1
                continue
        try:
            obj = parse_csv_line(line, src.header) if src.header else parse_json_line(line)
        except (LineError, UnicodeDecodeError) as exc:
            stats.reject(src.path, lineno, str(exc))
            continue
        if obj is None:
            stats.skipped += 1
        else:
            items.append((lineno, obj))
    return items


def _parse(
    recorder: Any, src: _Source, items: list[tuple[int, dict[str, Any]]], stats: ImportStats
) -> list[UsageEvent]:
    """Validate a batch; a bad line is rejected alone, naming its line and field."""
    try:
        return list(recorder.parse([obj for _, obj in items]))
    except EventError as exc:
        bad: dict[int, str] = {}
        for d in exc.details:
            bad.setdefault(d.index, f"{d.field}: {d.message}" if d.field else d.message)
        if len(exc.details) >= 100:  # the parser stops listing there; find the rest one by one
            for i, (_, obj) in enumerate(items):
                if i not in bad:
                    try:
                        recorder.parse([obj])
                    except EventError as one:
                        bad[i] = one.message
        for i in sorted(bad):
            stats.reject(src.path, items[i][0], bad[i])
        good = [obj for i, (_, obj) in enumerate(items) if i not in bad]
        return list(recorder.parse(good)) if good else []


def _checkpoint(recorder: Any, src: _Source) -> None:
    value = {"inode": src.inode, "offset": src.offset, "line": src.lineno, "header": src.header}
    recorder.ledger.set_meta(src.meta_key, orjson.dumps(value).decode())


def import_files(
    recorder: Any,
    paths: Iterable[str],
    *,
    follow: bool = False,
    from_start: bool = False,
    poll: float = 0.5,
    stop: threading.Event | None = None,
    progress: Any = None,
) -> ImportStats:
    """Read every file into the recorder; with `follow`, keep reading until `stop` is set."""
    stats = ImportStats()
    sources = [_Source(p) for p in paths]
    for src in sources:
        saved = None if from_start else recorder.ledger.get_meta(src.meta_key)
        _open(src, orjson.loads(saved) if saved else None)
    stop = stop or threading.Event()
    while True:
        idle = True
        for src in sources:
            while True:
                lines = _read_lines(src, BATCH_LINES)
                if not lines:
                    break
                idle = False
                _commit_batch(recorder, src, lines, stats)
                if progress is not None:
                    progress(src, stats)
            if follow:
                _reopen_if_rotated(recorder, src, stats)
        if not follow or stop.is_set():
            break
        if idle:
            stop.wait(poll)
    for src in sources:
        if src.fh is not None:
            src.fh.close()
    return stats


def _commit_batch(
    recorder: Any, src: _Source, lines: list[tuple[int, bytes]], stats: ImportStats
) -> None:
    items = _items(src, lines, stats)
    events = _parse(recorder, src, items, stats) if items else []
    if events:
        result = recorder.record_parsed(events)
        stats.accepted += result.accepted
        stats.duplicate += result.duplicates
    _checkpoint(recorder, src)


def _reopen_if_rotated(recorder: Any, src: _Source, stats: ImportStats) -> None:
    """Like tail -F: a new file at the path (rotation) or a shorter one (truncation)."""
    try:
        st = os.stat(src.path)
    except FileNotFoundError:
        return  # between the rename and the new file; try again at the next poll
    if st.st_ino != src.inode or st.st_size < src.offset:
        # The old file is read to its end above before we switch.
        assert src.fh is not None
        src.fh.close()
        _open(src, None)


# ---------------------------------------------------------------- the CLI command


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import _price_book
    from .recorder import Recorder

    for p in args.files:
        if not Path(p).is_file():
            print(f"ai-usage-exporter: import: {p}: no such file", file=sys.stderr)
            return 2
    recorder = Recorder(
        settings.db,
        prices=_price_book(settings),
        limits=settings.limits,
        store_text=settings.store_text,
        synchronous=settings.synchronous,
    )
    stop = threading.Event()
    t0 = time.perf_counter()
    try:
        with _progress(args.files) as progress:
            try:
                stats = import_files(
                    recorder,
                    args.files,
                    follow=args.follow,
                    from_start=args.from_start,
                    stop=stop,
                    progress=progress,
                )
            except KeyboardInterrupt:
                stop.set()
                print("interrupted; the checkpoint resumes from the last committed batch")
                return 130
    finally:
        recorder.close()
    elapsed = time.perf_counter() - t0
    print(stats.summary())
    print(f"{stats.read / elapsed if elapsed else 0:,.0f} lines/s")
    return 1 if stats.rejected else 0


class _progress:
    """A rich progress bar over the files' bytes when stdout is a terminal; else nothing."""

    def __init__(self, files: list[str]) -> None:
        self.total = sum(os.path.getsize(f) for f in files)
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not sys.stdout.isatty():
            return None
        try:
            from rich.progress import Progress
        except ImportError:  # rich is optional (the `cli` extra)
            return None
        self.bar = Progress()
        self.bar.start()
        task = self.bar.add_task("importing", total=self.total)
        done: dict[str, int] = {}

        def update(src: _Source, stats: ImportStats) -> None:
            done[src.path] = src.offset
            self.bar.update(task, completed=sum(done.values()))

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------- the usage log we write


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
