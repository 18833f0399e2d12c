"""The ledger commands of the CLI: report, query, import and prune.

Each opens the ledger named by --db (or the config/environment), reads or writes
through the same functions the HTTP routes use, and prints rows in the chosen format.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import threading
import time
from typing import Any

import orjson

from ai_usage_exporter.compose import build_ledger, build_price_book
from ai_usage_exporter.config.settings import DEFAULT_DB, Settings
from ai_usage_exporter.core.focus import ledger_charges, render_focus
from ai_usage_exporter.core.reports import (
    FILTERS,
    FORMATS,
    REPORTS,
    build_report,
    cell,
    expand_filters,
    render,
    window,
)
from ai_usage_exporter.core.rollup import STEPS
from ai_usage_exporter.core.timeseries import ParamError, parse_duration, parse_time
from ai_usage_exporter.ledger import Ledger
from ai_usage_exporter.ledger.queries import EVENT_FILTERS

QUERY_COLUMNS: tuple[str, ...] = (
    "ts", "service", "provider", "model", "operation", "status", "user", "session_id",
    "query_id", "workflow_id", "agent", "task", "tool", "node", "step", "key",
    "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
    "cost_total", "cost_source", "duration_ms", "error_type", "idempotency_key",
    "query_start", "query_end", "query_duration_ms", "query_text",
)  # fmt: skip
COMMANDS = ("report", "query", "import", "prune")
log = logging.getLogger("ai_usage_exporter")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        help=f"SQLite file or postgresql:// URL (default {DEFAULT_DB}; env AI_USAGE_EXPORTER_DB)",
    )
    p.add_argument("--config", help="YAML config file (env AI_USAGE_EXPORTER_CONFIG)")


def _instance(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--instance",
        metavar="NAME",
        help="only the rows of this instance (see `instances`; '' is the unassigned rows); "
        "default: the whole ledger, every instance",
    )


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("report", help="per day, query, agent, model, tenant or service")
    r.add_argument("name", choices=REPORTS)
    r.add_argument("--since", help="RFC 3339, epoch seconds or an age like 7d (default 30 days)")
    r.add_argument("--until", help="end, exclusive (default: the end of today, UTC)")
    r.add_argument(
        "--format",
        choices=(*FORMATS, "focus"),
        default="text",
        help="focus: `report daily` as FinOps FOCUS CSV",
    )
    r.add_argument("--workflow", help="agents: also the step-by-step log of this workflow id")
    r.add_argument(
        "--limit",
        type=int,
        default=100,
        help="at most this many rows (agents: agents; default 100)",
    )
    r.add_argument("--by", choices=("cost", "tokens"), default="cost", help="queries: order")
    for name in ("service", "tenant", "model", "user"):
        r.add_argument(f"--{name}", help=f"only the calls of this {name}")
    r.add_argument("--whatsapp", dest="user", help="alias of --user")
    _instance(r)
    _common(r)

    q = sub.add_parser("query", help="the calls themselves, newest first")
    q.add_argument("--user", help="the user id (a WhatsApp number, say)")
    q.add_argument("--whatsapp", dest="user", help="alias of --user")
    for name in ("query-id", "session", "workflow", "agent", "model", "service", "tenant", "key"):
        q.add_argument(f"--{name}")
    q.add_argument("--since", help="RFC 3339, epoch seconds or an age like 2h")
    q.add_argument("--limit", type=int, default=10)
    q.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _instance(q)
    _common(q)

    i = sub.add_parser("import", help="read usage log files into the ledger, idempotently")
    i.add_argument("files", nargs="+")
    i.add_argument("--follow", "-F", action="store_true", help="keep reading as files grow")
    i.add_argument("--from-start", action="store_true", help="ignore the saved checkpoint")
    i.add_argument("--prices", dest="prices_file", help="YAML price overrides")
    _common(i)

    pr = sub.add_parser("prune", help="delete old event rows; totals and reports stay the same")
    # One cutoff: given both, one would silently override the other.
    cutoff = pr.add_mutually_exclusive_group()
    cutoff.add_argument("--older-than", help="an age such as 90d (default: the retention setting)")
    cutoff.add_argument("--before", help="RFC 3339 or epoch seconds")
    pr.add_argument("--dry-run", action="store_true", help="only count what would go")
    _common(pr)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "import":
        from ai_usage_exporter.importer.run import run_import

        return run_import(args, settings)
    ledger = build_ledger(settings, "reader")
    try:
        if args.command == "report":
            return _report(args, ledger, settings)
        if args.command == "query":
            return _query(args, ledger, settings)
        return _prune(args, ledger, settings)
    except ParamError as exc:
        print(f"ai-usage-exporter: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `query | head`: the reader has all it wanted. Point stdout at /dev/null so
        # the interpreter's last flush does not fail again, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        ledger.close()


def _report(args: argparse.Namespace, ledger: Ledger, settings: Settings) -> int:
    if args.limit < 1:
        raise ParamError("limit", args.limit, "must be a positive number of rows")
    w = window(args.since, args.until, time.time())
    if args.format == "focus":
        return _report_focus(args, ledger, w.since, w.until)
    book = build_price_book(settings)
    body = build_report(
        ledger,
        args.name,
        w,
        workflow=args.workflow,
        limit=args.limit,
        order=args.by,
        instance=args.instance,
        filters={name: getattr(args, name) for name in FILTERS},
        model_name=book.canonical_model,
        suggest=book.suggest_model,
    )
    sys.stdout.write(render(body, args.format))
    return 0


def _report_focus(args: argparse.Namespace, ledger: Ledger, since: int, until: int) -> int:
    """The daily report as FinOps FOCUS rows: per UTC day, provider, model and token kind."""
    if args.name != "daily":
        print("ai-usage-exporter: --format focus is for `report daily`", file=sys.stderr)
        return 2
    day = STEPS["1d"]
    rows = ledger.bucket_sums(
        day,
        since // day * day,
        -(-until // day) * day,
        ("bucket", "provider", "model"),
        instance=args.instance,
        values=("input_tokens", "output_tokens", "cost_input_nusd", "cost_output_nusd"),
    )
    sys.stdout.write(render_focus(ledger_charges(rows)))
    return 0


def _query(args: argparse.Namespace, ledger: Ledger, settings: Settings) -> int:
    filters = {
        "user": args.user,
        "query_id": args.query_id,
        "session_id": args.session,
        "workflow_id": args.workflow,
        "agent": args.agent,
        "model": args.model,
        "service": args.service,
        "tenant": args.tenant,
        "key": args.key,
    }
    if args.limit < 1:
        raise ParamError("limit", args.limit, "must be a positive number of calls")
    given = {k: v for k, v in filters.items() if v is not None and k in EVENT_FILTERS}
    where = expand_filters(ledger, given, build_price_book(settings).canonical_model)
    since = parse_time("since", args.since, time.time()) if args.since else None
    rows = ledger.select_events(
        QUERY_COLUMNS, where, since, None, limit=args.limit, instance=args.instance
    )
    if len(rows) == args.limit:
        total = ledger.count_events_matching(where, since, None, instance=args.instance)
        if total > len(rows):
            # On stderr, so JSON and CSV on stdout stay whole.
            print(
                f"{len(rows)} of {total:,} calls, newest first; --limit {total} lists them all",
                file=sys.stderr,
            )
    for r in rows:
        for name in ("ts", "query_start", "query_end"):
            if r[name] is not None:
                r[name] = _iso(r[name])
    if args.format == "json":
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.format == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(QUERY_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        cols = ("ts", "user", "query_id", "agent", "model", "input_tokens", "output_tokens",
                "cost_total", "duration_ms", "status", "query_duration_ms", "query_text")  # fmt: skip
        # A model with no price costs 0 in the ledger; the table says why.
        table = [list(cols)] + [
            [
                "unpriced"
                if c == "cost_total" and r["cost_source"] == "unpriced"
                else _short(cell(r[c]))
                for c in cols
            ]
            for r in rows
        ]
        widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
        for t in table:
            print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
    return 0


def _short(value: Any, width: int = 40) -> str:
    # A table row stays one line: the query text is cut, newlines folded.
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _prune(args: argparse.Namespace, ledger: Ledger, settings: Settings) -> int:
    now = time.time()
    if args.before:
        cutoff = parse_time("before", args.before, now)
    elif args.older_than:
        cutoff = now - parse_duration("older-than", args.older_than)
    elif settings.retention:
        cutoff = now - settings.retention
    else:
        print(
            "ai-usage-exporter: give --older-than (e.g. 90d) or --before, or set retention:",
            file=sys.stderr,
        )
        return 2
    n = ledger.count_events_before(cutoff)
    if args.dry_run:
        print(f"would delete {n} events older than {_iso(cutoff)} (dry run; nothing deleted)")
        return 0
    deleted = prune(ledger, settings, now, events_before=cutoff)
    print(f"deleted {deleted} events older than {_iso(cutoff)}; counters and reports unchanged")
    return 0


def prune(
    ledger: Ledger, settings: Settings, now: float, events_before: float | None = None
) -> int:
    """Retention: old event rows, and minute/hour buckets past their own retention.

    Neither the rollup nor the day buckets are touched, so no total changes.
    """
    if events_before is None and settings.retention:
        events_before = now - settings.retention
    deleted = ledger.delete_events_before(events_before) if events_before is not None else 0
    if settings.minute_retention:
        ledger.delete_buckets_before(STEPS["1m"], now - settings.minute_retention)
    if settings.hour_retention:
        ledger.delete_buckets_before(STEPS["1h"], now - settings.hour_retention)
    return deleted


def _iso(ts: float) -> str:
    from ai_usage_exporter.core.reports import _iso as iso

    return iso(ts)


RETENTION_INTERVAL = 3600.0


def start_retention(settings: Settings, interval: float = RETENTION_INTERVAL) -> threading.Event:
    """Prune in the background every `interval` seconds; set the returned event to stop.

    It opens its own ledger connection, so pruning batches interleave with the
    writer's commits rather than waiting behind them.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(min(60.0, interval)):
            try:
                ledger = build_ledger(settings)
                try:
                    n = prune(ledger, settings, time.time())
                finally:
                    ledger.close()
                if n:
                    log.info("retention: deleted %d event rows; totals unchanged", n)
            except Exception:  # noqa: BLE001 - retried next round; recording goes on
                log.exception("retention: pruning failed")
            if stop.wait(interval):
                return

    threading.Thread(target=loop, name="ai-usage-retention", daemon=True).start()
    return stop
