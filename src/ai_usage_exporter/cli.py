"""Command line: `serve` runs the sidecar; `prices` shows resolved rates."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from . import __version__, commands
from .config import (
    DEFAULT_DB,
    DEFAULT_HOST,
    DEFAULT_PORT,
    ConfigError,
    Settings,
    is_loopback,
    resolve,
)
from .ledger import LedgerError
from .logs import UsageLog
from .pricing import PriceBook, PriceConfigError, describe_rates

log = logging.getLogger("ai_usage_exporter")

UNAUTHENTICATED_REFUSAL = (
    "refusing to listen on {host} without a write token: anyone who can reach it could "
    "write usage. Set AI_USAGE_EXPORTER_WRITE_TOKEN (and READ_TOKEN), or pass "
    "--allow-unauthenticated if the network is trusted."
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ai-usage-exporter", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the sidecar (HTTP API and /metrics)")
    s.add_argument(
        "--host", help=f"address to listen on (default {DEFAULT_HOST}; env AI_USAGE_EXPORTER_HOST)"
    )
    s.add_argument(
        "--port", type=int, help=f"port (default {DEFAULT_PORT}; env AI_USAGE_EXPORTER_PORT)"
    )
    s.add_argument(
        "--db",
        help=f"SQLite file or postgresql:// URL (default {DEFAULT_DB}; env AI_USAGE_EXPORTER_DB)",
    )
    s.add_argument("--config", help="YAML config file (env AI_USAGE_EXPORTER_CONFIG)")
    s.add_argument(
        "--prices", dest="prices_file", help="YAML price overrides (env AI_USAGE_EXPORTER_PRICES)"
    )
    s.add_argument(
        "--allow-unauthenticated",
        action="store_const",
        const=True,
        help="allow a non-loopback address without a write token",
    )
    s.add_argument(
        "--ssl-keyfile", help="TLS private key (PEM) (env AI_USAGE_EXPORTER_SSL_KEYFILE)"
    )
    s.add_argument(
        "--ssl-certfile", help="TLS certificate (PEM) (env AI_USAGE_EXPORTER_SSL_CERTFILE)"
    )
    s.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info)",
    )

    pr = sub.add_parser("prices", help="print resolved per-1M-token rates and where they come from")
    pr.add_argument("--provider", help="provider name, e.g. openai, anthropic, azure")
    pr.add_argument("--prices", dest="prices_file", help="YAML price overrides")
    pr.add_argument("--config", help="YAML config file with a prices: section")
    pr.add_argument("models", nargs="*", help="model names (default: every model of --provider)")
    commands.add_parsers(sub)
    return p


def _price_book(settings: Settings) -> PriceBook:
    if settings.prices_file:
        return PriceBook.from_file(settings.prices_file)
    if settings.prices is not None:
        return PriceBook(settings.prices, source=settings.config or "<config>")
    return PriceBook()


def serve(settings: Settings) -> int:
    import uvicorn

    from .recorder import Recorder

    if (
        not settings.write_tokens
        and not settings.allow_unauthenticated
        and not is_loopback(settings.host)
    ):
        print(
            f"ai-usage-exporter: {UNAUTHENTICATED_REFUSAL.format(host=settings.host)}",
            file=sys.stderr,
        )
        return 2
    recorder = Recorder(
        settings.db,
        prices=_price_book(settings),
        limits=settings.limits,
        label_caps=settings.label_caps,
        extra_labels=settings.extra_labels,
        store_text=settings.store_text,
        synchronous=settings.synchronous,
        budgets=settings.budgets,
        usage_log=(
            UsageLog(settings.usage_log, settings.usage_log_max_bytes, settings.usage_log_backups)
            if settings.usage_log
            else None
        ),
    )
    retention = commands.start_retention(settings)
    log.info(
        "ledger %s: counters rebuilt from the rollup in %.3f s",
        recorder.ledger.url,
        recorder.rebuild_seconds,
    )
    app = recorder.app(
        write_tokens=settings.write_tokens, read_tokens=settings.read_tokens, close_recorder=True
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        ssl_keyfile=settings.ssl_keyfile,
        ssl_certfile=settings.ssl_certfile,
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT: it stops accepting, lets in-flight requests
    # finish, then runs the lifespan shutdown, which commits the queue and closes.
    # Afterwards it restores the handlers found here and re-raises the signal; these
    # absorb it, so a drained stop exits 0 rather than dying of the signal. (A signal
    # before uvicorn installs its own still stops the server.)

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    server.run()
    retention.set()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in commands.COMMANDS:
        logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
        try:
            settings = resolve({k: getattr(args, k, None) for k in ("db", "config", "prices_file")})
            return commands.run(args, settings)
        except (ConfigError, PriceConfigError, LedgerError) as exc:
            print(f"ai-usage-exporter: {exc}", file=sys.stderr)
            return 2
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "models", "provider")}
    logging.basicConfig(
        level=(flags.get("log_level") or "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = resolve(flags)
        if args.command == "prices":
            print(describe_rates(_price_book(settings), args.provider, args.models))
            return 0
        return serve(settings)
    except (ConfigError, PriceConfigError, LedgerError) as exc:
        print(f"ai-usage-exporter: {exc}", file=sys.stderr)
        return 2
