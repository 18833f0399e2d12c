"""`ai-usage-exporter reconcile`: fetch the providers' bills, compare, print; and the
sidecar's part (`start_in_sidecar`): the gauges and the background fetching."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import threading
import time
from typing import Any

import orjson

from ai_usage_exporter.compose import build_ledger, build_price_book
from ai_usage_exporter.config.reconcile import ReconcileSettings
from ai_usage_exporter.config.settings import Settings
from ai_usage_exporter.core.focus import Charge, render_focus
from ai_usage_exporter.core.timeseries import ParamError, parse_time
from ai_usage_exporter.ledger import LedgerError
from ai_usage_exporter.ledger.provider_usage import StoreError
from ai_usage_exporter.reconcile.client import FetchError
from ai_usage_exporter.reconcile.compare import TOKEN_KEYS
from ai_usage_exporter.reconcile.service import (
    PROVIDERS,
    ReconcileCollector,
    build,
    closed_days,
    fetch_and_store,
    scopes_of,
    start_background,
)
from ai_usage_exporter.recorder.recorder import Recorder

FORMATS: tuple[str, ...] = ("text", "json", "csv", "markdown", "focus")
DEFAULT_SINCE = "7d"
DESCRIPTION = """\
Compare what the ledger recorded with what OpenAI and Anthropic billed, per closed
UTC day, provider and model, in dollars and tokens of each kind.

It fetches each provider's closed days in the range (unless --no-fetch) with the admin
key from the environment (OPENAI_ADMIN_KEY, ANTHROPIC_ADMIN_KEY, or the variables the
config's reconcile: section names), stores them in the ledger, and prints the rows.
Exit 0 when every row is clean, 1 when a row is flagged untracked_spend, over_recorded
or price_drift, 2 on a usage or fetch error.

examples:
  ai-usage-exporter reconcile --provider all --since 7d --db ai-usage.db
  ai-usage-exporter reconcile --provider openai --since 30d --format json
  ai-usage-exporter reconcile --no-fetch --format focus
"""
_BAD_FLAGS = frozenset(("untracked_spend", "over_recorded", "price_drift"))


def add_parser(sub: Any) -> None:
    r = sub.add_parser(
        "reconcile",
        help="compare what the ledger recorded with what OpenAI and Anthropic billed",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--provider", choices=(*PROVIDERS, "all"), default="all")
    r.add_argument("--since", default=DEFAULT_SINCE, help="RFC 3339, epoch seconds or an age (7d)")
    r.add_argument("--until", help="end, exclusive (default and latest: the start of today, UTC)")
    r.add_argument("--format", choices=FORMATS, default="text")
    r.add_argument(
        "--no-fetch", action="store_true", help="compare what earlier fetches stored; no HTTP"
    )
    r.add_argument(
        "--db",
        help="the sidecar's ledger: SQLite file or postgresql:// URL (env AI_USAGE_EXPORTER_DB)",
    )
    r.add_argument("--config", help="YAML config file with a reconcile: section")
    r.add_argument("--prices", dest="prices_file", help="YAML price overrides")


def start_in_sidecar(settings: Settings, recorder: Recorder) -> threading.Event:
    """With a `reconcile:` section, serve its gauges and fetch in the background.

    Returns the event that stops the fetching (set already when there is nothing to do).
    """
    if settings.reconcile is None:
        stop = threading.Event()
        stop.set()
        return stop
    recorder.registry.register(
        ReconcileCollector(recorder.ledger, recorder.prices, settings.reconcile)
    )
    return start_background(settings, settings.reconcile)


def missing_ledger(db: str) -> str | None:
    """Why `db` cannot be the ledger to reconcile against, or None.

    A SQLite path that does not exist would be created empty, and every billed dollar
    would then read as untracked: refuse it, naming the path.
    """
    if db.startswith(("postgresql://", "postgres://")):
        return None
    path = db[len("sqlite:///") :] if db.startswith("sqlite:///") else db
    if not os.path.exists(path):
        return (
            f"ledger {path} does not exist: give --db the sidecar's ledger "
            "(or set AI_USAGE_EXPORTER_DB)"
        )
    return None


def run(args: argparse.Namespace, settings: Settings) -> int:
    now = time.time()
    try:
        since_ts = parse_time("since", args.since, now)
        until_ts = parse_time("until", args.until, now) if args.until else None
    except ParamError as exc:
        print(f"ai-usage-exporter: {exc}", file=sys.stderr)
        return 2
    since, until = closed_days(since_ts, until_ts, now)
    if since >= until:
        print(
            "ai-usage-exporter: reconcile compares closed UTC days: the range has none "
            f"(--since {args.since}, --until {args.until or 'today'})",
            file=sys.stderr,
        )
        return 2
    why = missing_ledger(settings.db)
    if why is not None:
        print(f"ai-usage-exporter: {why}", file=sys.stderr)
        return 2
    rc = settings.reconcile or ReconcileSettings()
    names = list(PROVIDERS) if args.provider == "all" else [args.provider]
    book = build_price_book(settings)
    try:
        ledger = build_ledger(settings)
    except LedgerError as exc:
        print(f"ai-usage-exporter: {exc}", file=sys.stderr)
        return 2
    try:
        if not args.no_fetch:
            errors = fetch_and_store(ledger, rc, names, since, until, now)
            if errors:
                for error in errors.values():
                    print(f"ai-usage-exporter: {error}", file=sys.stderr)
                return 2
        body = build(ledger, book, rc, names, since, until)
        if args.format == "focus":
            charges = [
                Charge(
                    u.day,
                    u.provider,
                    u.model,
                    u.kind,
                    u.quantity,
                    _unit(u.kind),
                    u.cost_nusd,
                    "provider_bill",
                )
                for name in names
                for u in ledger.provider_usage(name, since, until)[0]
                if u.scope in scopes_of(rc.provider(name))
            ]
            sys.stdout.write(render_focus(charges))
        else:
            sys.stdout.write(render(body, args.format))
    except (FetchError, StoreError, LedgerError) as exc:
        print(f"ai-usage-exporter: {exc}", file=sys.stderr)
        return 2
    finally:
        ledger.close()
    return 1 if any(_BAD_FLAGS.intersection(r["flags"]) for r in body["rows"]) else 0


def _unit(kind: str) -> str:
    if kind == "web_search":
        return "Requests"
    return "" if kind == "other" else "Tokens"


# ---------------------------------------------------------------- rendering


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """One row for a table: token objects spread into columns, flags joined."""
    out: dict[str, Any] = {
        k: row[k]
        for k in ("day", "provider", "model", "billed_usd", "recorded_usd", "difference_usd")
    }
    out["capture_ratio"] = row["capture_ratio"]
    for side in ("billed", "recorded", "missing"):
        for k in TOKEN_KEYS:
            out[f"{side}_{k}"] = row[f"{side}_tokens"][k]
    out["flags"] = " ".join(row["flags"])
    out["drifted_rates"] = "; ".join(
        f"{d['kind']}: billed {d.get('billed_per_1m', d.get('billed_per_search'))} vs price book "
        f"{d.get('price_book_per_1m', d.get('price_book_per_search'))}"
        for d in row.get("drifted_rates", ())
        if "reason" not in d
    )
    return out


def render(body: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"
    rows = [flat(r) for r in body["rows"]]
    if fmt == "csv":
        buf = io.StringIO()
        cols = list(rows[0]) if rows else ["day", "provider", "model"]
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
        return buf.getvalue()
    cols = ["day", "provider", "model", "billed_usd", "recorded_usd", "capture_ratio",
            "missing_input", "missing_output", "flags"]  # fmt: skip
    table = [cols] + [[_cell(r[c]) for c in cols] for r in rows]
    scope = "; ".join(f"{p} {s}" for p, s in body["scope"].items())
    title = f"reconcile {body['since']} .. {body['until']} ({scope})"
    lines: list[str] = []
    if fmt == "markdown":
        lines += [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(cells) + " |" for cells in table[1:]]
    else:
        lines.append(f"===== {title} =====")
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        for cells in table:
            lines.append("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)).rstrip())
    for row in body["rows"]:
        for d in row.get("drifted_rates", ()):
            lines.append(
                f"  {row['day']} {row['provider']} {row['model']}: price drift {_drift(d)}"
            )
    lines.append("")
    for p, t in body["totals"].items():
        lines.append(
            f"{p}: billed ${t['billed_usd']:,.6f}, recorded ${t['recorded_usd']:,.6f}, "
            f"capture {_cell(t['capture_ratio'])}"
        )
    for p, missing in body["not_fetched"].items():
        lines.append(f"{p}: not fetched yet, not compared: {', '.join(missing)}")
    return "\n".join(lines) + "\n"


def _drift(d: dict[str, Any]) -> str:
    if "reason" in d:
        return str(d["reason"])
    billed = d.get("billed_per_1m", d.get("billed_per_search"))
    book = d.get("price_book_per_1m", d.get("price_book_per_search"))
    unit = "1M tokens" if "billed_per_1m" in d else "search"
    return f"{d['kind']}: billed ${billed} per {unit}, price book ${book} ({d['source']})"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v) or "-"
