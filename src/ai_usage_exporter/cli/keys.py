"""`ai-usage-exporter keys create|list|update|revoke`: the gateway's keys in the ledger.

A new key (or a rotated one) is printed once and never again: the ledger keeps its
hash only. Every value is checked before anything is written, and a wrong one names
the flag and the value.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from ai_usage_exporter.compose import build_ledger
from ai_usage_exporter.config.settings import Settings
from ai_usage_exporter.core.budgets import period_start
from ai_usage_exporter.core.timeseries import parse_duration
from ai_usage_exporter.gateway.admission import next_period_start
from ai_usage_exporter.gateway.keys import SHOWN_CHARS, generate_key, hash_key
from ai_usage_exporter.ledger import Ledger
from ai_usage_exporter.ledger.keys import NANO, KeyExists, KeyRecord

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_AGE = re.compile(r"^\d+(\.\d+)?[smhdw]$")
PERIODS = ("day", "month")
CLEAR = "none"  # `keys update --budget-usd none` removes the budget


class KeyArgError(ValueError):
    """A flag's value is wrong; the message names the flag and the value."""


def add_parser(sub: Any) -> None:
    k = sub.add_parser("keys", help="gateway keys: create, list, update, revoke")
    ks = k.add_subparsers(dest="keys_command", required=True)
    # No abbreviations: a mistyped flag (--budget) is an error, not a guess.
    c = ks.add_parser("create", help="make a key; it is printed once", allow_abbrev=False)
    c.add_argument("--name", required=True, help="the key's name, recorded on its calls")
    _limits(c, clearable=False)
    u = ks.add_parser(
        "update", help="change a key's attribution, limits or secret", allow_abbrev=False
    )
    u.add_argument("name", help="the key to change")
    _limits(u, clearable=True)
    u.add_argument(
        "--rotate",
        action="store_true",
        help="give the key a new secret (printed once); the old one stops working, "
        "the budget's use so far stays",
    )
    ls = ks.add_parser("list", help="every key, without its secret")
    r = ks.add_parser("revoke", help="refuse a key from now on (within seconds fleet-wide)")
    r.add_argument("name", help="the key to revoke")
    for p in (c, u, ls, r):
        p.add_argument(
            "--db",
            help="SQLite file or postgresql:// URL (default ai-usage.db; env AI_USAGE_EXPORTER_DB)",
        )
        p.add_argument(
            "--config",
            help="YAML config file (env AI_USAGE_EXPORTER_CONFIG); its gateway routes "
            "check --routes",
        )
        p.add_argument("--format", choices=("text", "json"), default="text")


def _limits(p: argparse.ArgumentParser, clearable: bool) -> None:
    clear = f" ('{CLEAR}' removes it)" if clearable else ""
    p.add_argument("--tenant", help="tenant recorded on the key's calls" + clear)
    p.add_argument("--user", help="user recorded on the key's calls" + clear)
    p.add_argument("--service", help="service recorded on the key's calls" + clear)
    p.add_argument("--routes", help="comma-separated gateway routes it may use" + clear)
    p.add_argument(
        "--models", help="comma-separated models it may ask for ('*' globs allowed)" + clear
    )
    p.add_argument("--budget-usd", help="US dollars per period" + clear)
    p.add_argument("--budget-tokens", help="tokens (input + output) per period" + clear)
    p.add_argument("--period", choices=PERIODS, help="the budget's period, UTC (default month)")
    p.add_argument("--rpm", help="requests per minute" + clear)
    p.add_argument("--tpm", help="tokens per minute" + clear)
    p.add_argument(
        "--expires", help="RFC 3339 date or time (UTC), or an age from now like 30d" + clear
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    changes: dict[str, Any] = {}
    try:
        if args.keys_command in ("create", "update"):
            changes = _changes(args, settings)
        ledger = build_ledger(settings)
    except KeyArgError as exc:
        print(f"ai-usage-exporter keys: {exc}", file=sys.stderr)
        return 2
    try:
        if args.keys_command == "create":
            return _create(args, ledger, changes)
        if args.keys_command == "update":
            return _update(args, ledger, changes)
        if args.keys_command == "revoke":
            return _revoke(args, ledger)
        return _list(args, ledger)
    finally:
        ledger.close()


# ---------------------------------------------------------------- values


def _text(flag: str, value: str) -> str:
    if not value.strip() or value != value.strip() or not value.isprintable():
        raise KeyArgError(
            f"{flag}: expected a non-empty name without surrounding spaces, got {value!r}"
        )
    if len(value) > 256:
        raise KeyArgError(f"{flag}: at most 256 characters, got {len(value)}")
    return value


def _list_arg(flag: str, value: str, known: tuple[str, ...] | None) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(","))
    if not items or any(not v for v in items):
        raise KeyArgError(f"{flag}: expected comma-separated names, got {value!r}")
    if known is not None:
        for v in items:
            if v not in known:
                raise KeyArgError(
                    f"{flag}: unknown route {v!r}; the gateway's routes are: {', '.join(known)}"
                )
    return items


def _usd(value: str) -> int:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount < 0:
        raise KeyArgError(
            f"--budget-usd: expected a non-negative amount of US dollars, got {value!r}"
        )
    return int(amount * NANO)


def _count(flag: str, value: str, minimum: int) -> int:
    try:
        n = int(value)
    except ValueError:
        n = minimum - 1
    if n < minimum:
        what = "a positive" if minimum > 0 else "a non-negative"
        raise KeyArgError(f"{flag}: expected {what} whole number, got {value!r}")
    return n


def _expires(value: str, now: float) -> float:
    text = value.strip()
    if _AGE.match(text):
        return now + parse_duration("--expires", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise KeyArgError(
            f"--expires: expected an RFC 3339 date or time (2026-12-31, 2026-12-31T18:00:00Z) "
            f"or an age like 30d, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ts = parsed.timestamp()
    if not math.isfinite(ts) or ts <= now:
        raise KeyArgError(f"--expires: {value!r} is in the past")
    return ts


def _changes(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The columns the flags set, checked; `none` clears a value (update only)."""
    if args.keys_command == "create":
        name = args.name
        if not _NAME.match(name):
            raise KeyArgError(
                f"--name: {name!r} must be 1-64 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            )
    routes = tuple(settings.gateway.routes) if settings.gateway is not None else None
    now = time.time()
    out: dict[str, Any] = {}

    def given(flag: str) -> str | None:
        value: str | None = getattr(args, flag.lstrip("-").replace("-", "_"))
        return value

    parsers: dict[str, tuple[str, Any]] = {
        "--tenant": ("tenant", lambda v: _text("--tenant", v)),
        "--user": ("user", lambda v: _text("--user", v)),
        "--service": ("service", lambda v: _text("--service", v)),
        "--routes": ("routes", lambda v: _routes(v, routes)),
        "--models": ("models", lambda v: _list_arg("--models", v, None)),
        "--budget-usd": ("budget_nusd", _usd),
        "--budget-tokens": ("budget_tokens", lambda v: _count("--budget-tokens", v, 0)),
        "--rpm": ("rpm", lambda v: _count("--rpm", v, 1)),
        "--tpm": ("tpm", lambda v: _count("--tpm", v, 1)),
        "--expires": ("expires_at", lambda v: _expires(v, now)),
    }
    for flag, (column, parse) in parsers.items():
        value = given(flag)
        if value is None:
            continue
        if args.keys_command == "update" and value == CLEAR:
            out[column] = None
        else:
            out[column] = parse(value)
    if args.period is not None:
        out["period"] = args.period
    return out


def _routes(value: str, known: tuple[str, ...] | None) -> tuple[str, ...]:
    if known is None:
        raise KeyArgError(
            f"--routes: cannot check {value!r} without the gateway's routes; pass --config "
            "with the gateway: section the sidecar serves"
        )
    return _list_arg("--routes", value, known)


# ---------------------------------------------------------------- commands


def _create(args: argparse.Namespace, ledger: Ledger, changes: dict[str, Any]) -> int:
    secret = generate_key()
    now = time.time()
    record = KeyRecord(
        name=args.name,
        key_hash=hash_key(secret),
        key_prefix=secret[:SHOWN_CHARS],
        created_at=now,
        updated_at=now,
        **changes,
    )
    try:
        ledger.insert_key(record)
    except KeyExists:
        print(
            f"ai-usage-exporter keys: a key named {args.name!r} exists already; "
            "`keys update` changes it, `keys update --rotate` gives it a new secret",
            file=sys.stderr,
        )
        return 2
    _print_secret(args, record, secret)
    return 0


def _update(args: argparse.Namespace, ledger: Ledger, changes: dict[str, Any]) -> int:
    secret = None
    if args.rotate:
        secret = generate_key()
        changes.update(key_hash=hash_key(secret), key_prefix=secret[:SHOWN_CHARS])
    if not changes:
        print("ai-usage-exporter keys update: nothing to change; give a flag", file=sys.stderr)
        return 2
    changes["updated_at"] = time.time()
    record = ledger.update_key(args.name, changes)
    if record is None:
        return _no_such_key(args.name)
    if secret is not None:
        _print_secret(args, record, secret)
    else:
        _print_record(args, record, ledger)
    return 0


def _revoke(args: argparse.Namespace, ledger: Ledger) -> int:
    existing = ledger.key_by_name(args.name)
    if existing is None:
        return _no_such_key(args.name)
    if existing.revoked_at is not None:
        record = existing
    else:
        now = time.time()
        record = ledger.update_key(args.name, {"revoked_at": now, "updated_at": now}) or existing
    _print_record(args, record, ledger)
    return 0


def _list(args: argparse.Namespace, ledger: Ledger) -> int:
    records = ledger.list_keys()
    rows = [_shown(r, ledger) for r in records]
    if args.format == "json":
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not rows:
        print("no gateway keys; `ai-usage-exporter keys create --name NAME` makes one")
        return 0
    cols = ("name", "key_prefix", "status", "tenant", "user", "service", "routes", "models",
            "budget", "used", "rpm", "tpm", "expires_at")  # fmt: skip
    table = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
    return 0


def _no_such_key(name: str) -> int:
    print(
        f"ai-usage-exporter keys: no key named {name!r}; `keys list` shows the keys",
        file=sys.stderr,
    )
    return 2


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _shown(record: KeyRecord, ledger: Ledger) -> dict[str, Any]:
    now = time.time()
    out = record.public()
    out["key_prefix"] = record.key_prefix + "…"
    for c in ("created_at", "updated_at", "expires_at", "revoked_at"):
        out[c] = _iso(out[c])
    out["status"] = (
        "revoked"
        if record.revoked_at is not None
        else "expired"
        if record.expires_at is not None and record.expires_at <= now
        else "active"
    )
    if record.budget_nusd is not None or record.budget_tokens is not None:
        tokens, nusd, _ = ledger.key_usage(record.name, period_start(record.period, now, 0.0))
        out["used_usd"] = nusd / NANO
        out["used_tokens"] = tokens
        out["resets_at"] = _iso(next_period_start(record.period, now))
        parts, used = [], []
        if record.budget_usd is not None:
            parts.append(f"${record.budget_usd:g}/{record.period}")
            used.append(f"${nusd / NANO:.4g}")
        if record.budget_tokens is not None:
            parts.append(f"{record.budget_tokens} tokens/{record.period}")
            used.append(f"{tokens} tokens")
        out["budget"] = ", ".join(parts)
        out["used"] = ", ".join(used)
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _print_record(args: argparse.Namespace, record: KeyRecord, ledger: Ledger) -> None:
    shown = _shown(record, ledger)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(shown).decode() + "\n")
        return
    print(f"key {record.name!r}: {shown['status']}")


def _print_secret(args: argparse.Namespace, record: KeyRecord, secret: str) -> None:
    if args.format == "json":
        body = {"name": record.name, "key": secret, **_public_iso(record)}
        sys.stdout.write(orjson.dumps(body).decode() + "\n")
        return
    print(secret)
    print(
        f"key {record.name!r}: shown this once; the ledger keeps only its hash. "
        f"Clients send it as Authorization: Bearer <key>.",
        file=sys.stderr,
    )


def _public_iso(record: KeyRecord) -> dict[str, Any]:
    out = record.public()
    for c in ("created_at", "updated_at", "expires_at", "revoked_at"):
        out[c] = _iso(out[c])
    return out
