"""Usage log files read into the ledger (`ai-usage-exporter import`).

Import reads files in blocks and hands each line to a `formats.LineReader`,
which finds the usage record in it (see there for the formats), derives an
idempotency key from the record's content when it has none (so importing a file
twice counts it once), validates batches through the same `parse_events` as a
posted event, and commits each batch through the Recorder together with the file's
checkpoint (inode, offset, what spans lines), so an interrupted import resumes
exactly where its last commit ended.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, cast

import orjson

from ai_usage_exporter.compose import build_recorder
from ai_usage_exporter.config.settings import Settings
from ai_usage_exporter.core.events.model import EventError, Limits, UsageEvent
from ai_usage_exporter.core.events.parse import parse_events
from ai_usage_exporter.importer.formats import LineError, LineReader, content_key

__all__ = ("ImportStats", "LineError", "content_key", "import_files")

# Lines per commit. Each batch is committed before the next is read: reading the
# next one meanwhile was measured slower (both are Python work under one GIL, and
# the writer waits for it at every row SQLite steps), on SQLite and PostgreSQL.
BATCH_LINES = 20_000
MAX_REJECTS_SHOWN = 20
GZIP_MAGIC = b"\x1f\x8b"
MAX_AGE_SECONDS = 10 * 365 * 86400.0
READ_BYTES = 1 << 20


@dataclass
class ImportStats:
    read: int = 0
    accepted: int = 0  # events committed (a summary line may hold several)
    duplicate: int = 0
    rejected: int = 0
    skipped: int = 0  # blank lines, comments, and lines that hold no usage record
    incomplete: int = 0  # records still being written at the end: left for the next run
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
        files: dict[str, int] = {}
        for path, _, _ in self.rejects:
            files.setdefault(path, len(files))
        # Validation rejects a batch's lines after reading did: show them in file order.
        for path, lineno, reason in sorted(self.rejects, key=lambda r: (files[r[0]], r[1])):
            lines.append(f"  {path}:{lineno}: {reason}")
        if self.rejected > len(self.rejects):
            lines.append(f"  ... and {self.rejected - len(self.rejects)} more")
        if self.incomplete:
            lines.append(
                f"  {self.incomplete} record(s) still being written (a last line without "
                "its newline, or a JSON object not closed yet); the next import reads them"
            )
        return "\n".join(lines)


@dataclass
class _Source:
    """One file being read: where we are, and how to read its lines."""

    path: str
    fh: IO[bytes] | None = None
    raw: IO[bytes] | None = None  # the file under a decompressing `fh`
    broken: str | None = None  # why the rest of the file cannot be read
    inode: int = 0
    offset: int = 0
    lineno: int = 0
    reader: LineReader = field(default_factory=LineReader)
    partial: bytes = b""

    @property
    def meta_key(self) -> str:
        return f"import:{os.path.realpath(self.path)}"

    def close(self) -> None:
        for f in (self.fh, self.raw):
            if f is not None:
                f.close()
        self.fh = self.raw = None

    def checkpoint(self) -> dict[str, str]:
        value = {"inode": self.inode, "offset": self.offset, "line": self.lineno}
        value.update(self.reader.state())
        return {self.meta_key: orjson.dumps(value).decode()}


def _open(src: _Source, resume: dict[str, Any] | None) -> None:
    raw = open(src.path, "rb")  # noqa: SIM115 - kept open while following
    st = os.fstat(raw.fileno())
    compressed = raw.read(2) == GZIP_MAGIC
    raw.seek(0)
    # A rotated, compressed log: offsets count its uncompressed bytes.
    fh = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if compressed else raw
    src.fh, src.raw, src.inode = fh, raw, st.st_ino
    src.offset = src.lineno = 0
    src.reader, src.partial = LineReader(), b""
    if (
        resume
        and resume.get("inode") == st.st_ino
        and (compressed or int(resume.get("offset", 0)) <= st.st_size)
    ):
        src.offset = int(resume["offset"])
        src.lineno = int(resume.get("line", 0))
        src.reader = LineReader(
            resume.get("header"), resume.get("pending") or "", resume.get("block") or ""
        )
        fh.seek(src.offset)


@dataclass(slots=True)
class _Batch:
    """Whole lines read from one file, and the line number of the first."""

    first: int
    lines: list[bytes]
    # A last line without its newline, read as it is (only when nothing will follow).
    tail: bytes | None = None


def _read_lines(src: _Source, max_lines: int, final: bool) -> _Batch | None:
    """About `max_lines` whole lines from the current position, read in blocks.

    A last line without its newline waits for the rest (a writer is mid-line),
    unless `final`: then it is read as it is, if it reads at all (see `_items`).
    """
    assert src.fh is not None
    batch = _Batch(src.lineno + 1, [])
    lines = batch.lines
    while len(lines) < max_lines:
        try:
            # Smaller reads of a compressed file: a cut-short one loses less at its end.
            data = src.fh.read(READ_BYTES if src.raw is src.fh else READ_BYTES // 16)
        except (EOFError, OSError, zlib.error) as exc:
            # A .gz cut short or corrupt: what came before it counts, the rest cannot.
            src.broken, data = f"{type(exc).__name__}: {exc}", b""
        if not data:
            if final and src.partial:
                batch.tail, src.partial = src.partial, b""
            break
        if src.partial:
            data = src.partial + data
        parts = data.split(b"\n")
        src.partial = parts.pop()  # after the last newline: b"" or a line being written
        src.offset += len(data) - len(src.partial)
        lines += parts
    src.lineno += len(lines)
    return batch if lines or batch.tail is not None else None


def _items(src: _Source, batch: _Batch, stats: ImportStats) -> list[tuple[int, dict[str, Any]]]:
    items: list[tuple[int, dict[str, Any]]] = []
    read = src.reader.read
    for n, line in enumerate(batch.lines, batch.first):
        try:
            obj = read(line)
        except LineError as exc:
            stats.reject(src.path, n, str(exc))
            continue
        if obj is None:
            stats.skipped += 1
            continue
        if "idempotency_key" not in obj:
            obj["idempotency_key"] = content_key(obj)
        items.append((n, obj))
    stats.read += len(batch.lines)
    if batch.tail is not None:
        # A last line without its newline is taken only when it is a whole record by
        # itself; else it is still being written, and the next run reads it again.
        before = src.reader.snapshot()
        try:
            obj = read(batch.tail)
            unfinished = src.reader.waiting
        except LineError:
            unfinished = True
        if unfinished:
            src.reader.restore(before)
            if not src.reader.waiting:  # else the end of the run counts it
                stats.incomplete += 1
            return items
        # Read as it is: it counts, and the position moves past it.
        stats.read += 1
        src.lineno += 1
        src.offset += len(batch.tail)
        if obj is None:
            stats.skipped += 1
        else:
            if "idempotency_key" not in obj:
                obj["idempotency_key"] = content_key(obj)
            items.append((src.lineno, obj))
    return items


def import_limits(limits: Limits) -> Limits:
    """The recorder's limits, but a log file is history: events up to ten years old."""
    return replace(limits, max_age_seconds=max(limits.max_age_seconds, MAX_AGE_SECONDS))


def _parse(
    recorder: Any, src: _Source, items: list[tuple[int, dict[str, Any]]], stats: ImportStats
) -> list[UsageEvent]:
    """Validate a batch; a bad line is rejected alone, naming its line and field."""
    limits = import_limits(recorder.limits)
    step = limits.max_events_per_request
    out: list[UsageEvent] = []
    for i in range(0, len(items), step):
        out.extend(_parse_chunk(limits, src, items[i : i + step], stats))
    return out


def _parse_chunk(
    limits: Limits, src: _Source, items: list[tuple[int, dict[str, Any]]], stats: ImportStats
) -> list[UsageEvent]:
    try:
        return parse_events([obj for _, obj in items], limits)
    except EventError as exc:
        bad: dict[int, str] = {}
        for d in exc.details:
            bad.setdefault(d.index, f"{d.field}: {d.message}" if d.field else d.message)
        if len(exc.details) >= 100:  # the parser stops listing there; find the rest one by one
            for i, (_, obj) in enumerate(items):
                if i not in bad:
                    try:
                        parse_events([obj], limits)
                    except EventError as one:
                        bad[i] = one.message
        for i in sorted(bad):
            stats.reject(src.path, items[i][0], bad[i])
        good = [obj for i, (_, obj) in enumerate(items) if i not in bad]
        return parse_events(good, limits) if good else []


def _commit(
    recorder: Any, events: list[UsageEvent], meta: dict[str, str], stats: ImportStats
) -> None:
    result = recorder.record_parsed(events, meta=meta)
    stats.accepted += result.accepted
    stats.duplicate += result.duplicates


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
    try:
        while True:
            idle = True
            for src in sources:
                while src.broken is None:
                    batch = _read_lines(src, BATCH_LINES, final=not follow)
                    if batch is not None:
                        idle = False
                        items = _items(src, batch, stats)
                        events = _parse(recorder, src, items, stats) if items else []
                        _commit(recorder, events, src.checkpoint(), stats)
                        if progress is not None:
                            progress(src, stats)
                    if src.broken is not None:
                        stats.reject(src.path, src.lineno + 1, f"cannot read on: {src.broken}")
                    elif batch is None:
                        break
                if follow:
                    _reopen_if_rotated(recorder, src, stats)
            if not follow or stop.is_set():
                # A record begun and not ended (a split or pretty-printed one) waits in
                # the checkpoint for the next run.
                stats.incomplete += sum(1 for src in sources if src.reader.waiting)
                break
            if idle:
                stop.wait(poll)
    finally:
        for src in sources:
            src.close()
    return stats


def _reopen_if_rotated(recorder: Any, src: _Source, stats: ImportStats) -> None:
    """Like tail -F: a new file at the path (rotation) or a shorter one (truncation)."""
    try:
        st = os.stat(src.path)
    except FileNotFoundError:
        return  # between the rename and the new file; try again at the next poll
    if st.st_ino != src.inode or st.st_size < src.offset:
        # The old file was read to its end above; a last line it never finished is
        # read as it is before we switch.
        batch = _read_lines(src, BATCH_LINES, final=True)
        if batch is not None:
            items = _items(src, batch, stats)
            _commit(recorder, _parse(recorder, src, items, stats) if items else [], {}, stats)
        src.close()
        _open(src, None)


# ---------------------------------------------------------------- the CLI command


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    for p in args.files:
        if not Path(p).is_file():
            print(f"ai-usage-exporter: import: {p}: no such file", file=sys.stderr)
            return 2
    # Opened as a tool, not as a sidecar: the events go to the unassigned rows, which
    # the next sidecar to start adopts (its counters then include them), and no
    # sidecar's rows are taken over.
    recorder = build_recorder(settings, role="tool")
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
