"""Command line: `serve` runs the sidecar; `prices` shows resolved rates; `healthcheck`
probes a running sidecar the way its settings say it listens; `instances` and
`retire-instance` look after the sidecars sharing one ledger; `report`, `query`,
`import` and `prune` work on the ledger (see `ai_usage_exporter.cli.commands`); `keys`
manages the gateway's keys (`ai_usage_exporter.cli.keys`)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from ai_usage_exporter.cli import commands, reconcile, serve_lock
from ai_usage_exporter.cli import keys as keys_command
from ai_usage_exporter.compose import build_ledger, build_price_book, build_recorder
from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.gateway import read_keys
from ai_usage_exporter.config.settings import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_DB,
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    LOG_LEVEL_ALIASES,
    LOG_LEVELS,
    Settings,
    is_loopback,
    resolve,
)
from ai_usage_exporter.core.pricing.rates import PriceConfigError
from ai_usage_exporter.core.pricing.render import describe_rates, rate_pairs
from ai_usage_exporter.core.version import __version__
from ai_usage_exporter.ledger import LedgerError
from ai_usage_exporter.server.app import create_app
from ai_usage_exporter.server.bodytimeout import BodyTimeoutMiddleware

log = logging.getLogger("ai_usage_exporter")

# What --help says: the commands, for a user (the module docstring is for developers).
DESCRIPTION = (
    "Count what AI applications spend. `serve` runs the sidecar (HTTP API, /metrics, "
    "dashboard, gateway); `prices` shows resolved rates; `healthcheck` probes a running "
    "sidecar; `report`, `query`, `import` and `prune` work on the ledger; `instances` and "
    "`retire-instance` look after the sidecars sharing one. `ai-usage-exporter COMMAND "
    "--help` tells more."
)

UNAUTHENTICATED_REFUSAL = (
    "refusing to listen on {host} without a write token: anyone who can reach it could "
    "write usage. Set AI_USAGE_EXPORTER_WRITE_TOKEN (and READ_TOKEN), or pass "
    "--allow-unauthenticated if the network is trusted."
)
GATEWAY_UNAUTHENTICATED_REFUSAL = (
    "refusing to serve the gateway on {host} without a client token: anyone who can reach it "
    "could spend the provider keys. Set gateway.client_tokens or AI_USAGE_EXPORTER_GATEWAY_TOKEN, "
    "make a key with `ai-usage-exporter keys create`, "
    "or pass --allow-unauthenticated if the network is trusted."
)


def _parser() -> argparse.ArgumentParser:
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each subcommand's own (whose help says what the command can do)."""
    p = argparse.ArgumentParser(prog="ai-usage-exporter", description=DESCRIPTION)
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
        "--otlp-grpc-port",
        type=int,
        help="also take OTLP/gRPC trace exports on this port, e.g. 4317 (default off; "
        "env AI_USAGE_EXPORTER_OTLP_GRPC_PORT); OTLP/HTTP is always on --port",
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
        "--instance",
        help="this sidecar's name in a shared ledger (default: POD_NAME, HOSTNAME or the "
        "host name; env AI_USAGE_EXPORTER_INSTANCE)",
    )
    s.add_argument(
        "--log-level",
        choices=[*LOG_LEVELS, *LOG_LEVEL_ALIASES],
        help="log level (default info; env AI_USAGE_EXPORTER_LOG_LEVEL)",
    )
    s.add_argument(
        "--body-timeout",
        type=float,
        metavar="SECONDS",
        help="a request body must arrive within this many seconds, else 408 "
        f"(default {DEFAULT_BODY_TIMEOUT:g}; env AI_USAGE_EXPORTER_BODY_TIMEOUT)",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="connections served at once; requests beyond get 503 "
        f"(default {DEFAULT_MAX_CONNECTIONS}; env AI_USAGE_EXPORTER_MAX_CONNECTIONS)",
    )

    ins = sub.add_parser(
        "instances", help="list the instances with rows in the ledger, with their requests"
    )
    rt = sub.add_parser(
        "retire-instance",
        help="move a gone sidecar's rollup and bucket rows into the fleet-wide __retired__ instance",
    )
    rt.add_argument("name", help="the instance to retire (see `instances`)")
    for cmd in (ins, rt):
        cmd.add_argument("--db", help="the shared ledger's URL (env AI_USAGE_EXPORTER_DB)")
        cmd.add_argument("--config", help="YAML config file (env AI_USAGE_EXPORTER_CONFIG)")

    pr = sub.add_parser(
        "prices",
        help="print resolved per-1M-token rates and where they come from",
        description="Print resolved USD-per-1M-token rates and where each comes from: "
        "an override file and line, or the genai-prices version.",
        epilog="examples:\n  ai-usage-exporter prices gpt-4o-mini claude-sonnet-4-20250514\n"
        "  ai-usage-exporter prices --provider anthropic\n"
        "  ai-usage-exporter prices --prices prices.yml   # the overrides alone",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pr.add_argument("--provider", help="provider name, e.g. openai, anthropic, azure")
    pr.add_argument("--prices", dest="prices_file", help="YAML price overrides")
    pr.add_argument("--config", help="YAML config file with a prices: section")
    pr.add_argument("models", nargs="*", help="model names (default: every model of --provider)")
    commands.add_parsers(sub)
    reconcile.add_parser(sub)
    keys_command.add_parser(sub)

    h = sub.add_parser(
        "healthcheck",
        help="probe a running sidecar's /healthz; exit 0 if it answers, 1 if not",
        description="Probe /healthz of the sidecar these settings describe (port, and HTTPS "
        "when a TLS certificate is configured), as a container HEALTHCHECK does.",
    )
    h.add_argument("--host", help="address the sidecar listens on (env AI_USAGE_EXPORTER_HOST)")
    h.add_argument("--port", type=int, help="its port (env AI_USAGE_EXPORTER_PORT)")
    h.add_argument("--config", help="YAML config file (env AI_USAGE_EXPORTER_CONFIG)")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    return p, {"serve": s, "prices": pr, "healthcheck": h}


def healthcheck(settings: Settings, timeout: float) -> tuple[bool, str]:
    """Probe /healthz where `settings` say the sidecar listens; (healthy, one-line reason)."""
    host = settings.host
    # A wildcard address is where the server listens, not where to reach it.
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    address = host
    if ":" in host:
        host = f"[{host}]"
    tls = bool(settings.ssl_certfile)
    url = f"{'https' if tls else 'http'}://{host}:{settings.port}/healthz"
    context = None
    if tls:
        # Liveness of the sidecar itself, on its own address: its certificate names the
        # service's public host, not this one, and may be self-signed, so it is not checked.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:  # noqa: S310
            status = r.status
    except urllib.error.HTTPError as exc:
        return False, f"unhealthy: {url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return (
            False,
            f"unhealthy: {url}: {reason}{_scheme_hint(address, settings.port, tls, reason, timeout)}",
        )
    return True, f"ok: {url} answered {status}"


def _scheme_hint(host: str, port: int, tls: bool, reason: object, timeout: float) -> str:
    """Why a probe in the wrong scheme failed, when that is why: HTTP to TLS, or back."""
    if tls:
        if isinstance(reason, ssl.SSLError):
            return (
                "; the port does not speak TLS (plain HTTP?): start the server with the same "
                "certificate, or drop the TLS settings here"
            )
        return ""
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw):
                pass
    except OSError:
        return ""
    return (
        "; the port speaks HTTPS: give healthcheck the server's TLS settings "
        "(AI_USAGE_EXPORTER_SSL_CERTFILE and _KEYFILE, or tls: in --config)"
    )


def _has_gateway_keys(settings: Settings) -> bool:
    """Whether the ledger holds gateway keys, which close the gateway to callers without one."""
    ledger = build_ledger(settings)
    try:
        return ledger.count_keys() > 0
    finally:
        ledger.close()


def serve(settings: Settings) -> int:
    import uvicorn

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
    if (
        settings.gateway is not None
        and not settings.gateway_tokens
        and not settings.allow_unauthenticated
        and not is_loopback(settings.host)
        and not _has_gateway_keys(settings)
    ):
        print(
            f"ai-usage-exporter: {GATEWAY_UNAUTHENTICATED_REFUSAL.format(host=settings.host)}",
            file=sys.stderr,
        )
        return 2
    keys = read_keys(settings.gateway, os.environ) if settings.gateway is not None else {}
    # Before the ledger opens: a second sidecar must not adopt the first one's rows.
    lock = serve_lock.hold(settings.db)
    recorder = build_recorder(settings)
    retention = commands.start_retention(settings)
    reconciling = reconcile.start_in_sidecar(settings, recorder)
    log.info(
        "ledger %s: counters of instance %r rebuilt from the rollup in %.3f s",
        recorder.ledger.url,
        recorder.instance,
        recorder.rebuild_seconds,
    )
    gateway = None
    if settings.gateway is not None:
        from ai_usage_exporter.gateway.calllog import CallLogger
        from ai_usage_exporter.gateway.proxy import Gateway

        gateway = Gateway(
            settings.gateway,
            recorder,
            keys=keys,
            logger=CallLogger.from_env(
                os.environ,
                default_level=settings.log_level,
                secrets=[k for k in keys.values() if k],
            ),
        )
        log.info(
            "gateway: routes %s, default %s",
            ", ".join(settings.gateway.routes),
            settings.gateway.default_route,
        )
    app = create_app(
        recorder,
        write_tokens=settings.write_tokens,
        read_tokens=settings.read_tokens,
        close_recorder=True,
        gateway=gateway,
        gateway_tokens=settings.gateway_tokens,
        reconcile=settings.reconcile,
        otlp_grpc_port=settings.otlp_grpc_port,
        otlp_grpc_host=settings.host,
    )
    config = uvicorn.Config(
        BodyTimeoutMiddleware(
            app,
            settings.body_timeout,
            on_timeout=lambda: recorder.count_rejected("body_timeout"),
        ),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        ssl_keyfile=settings.ssl_keyfile,
        ssl_certfile=settings.ssl_certfile,
        timeout_graceful_shutdown=30,
        server_header=False,
        # uvicorn answers 503 to a request arriving while this many connections are open
        # (or requests running); with the body timeout, slow senders cannot pile up.
        limit_concurrency=settings.max_connections,
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
    # What startup built (modules, the price book, the app) lives as long as the
    # process; frozen, the collector's full passes skip it. Without this a full pass
    # walked all of it every few thousand requests (about 1.5 ms per 512-span OTLP
    # export on average; see BENCHMARKS.md, OTLP receiver).
    gc.collect()
    gc.freeze()
    server.run()
    retention.set()
    reconciling.set()
    if lock is not None:
        lock.close()
    return 0


def instances(settings: Settings, retire: str | None) -> int:
    """List the ledger's instances, or retire one; a tool's connection adopts nothing."""
    ledger = build_ledger(settings, "reader")
    try:
        if retire is not None:
            moved = ledger.retire_instance(retire)
            if not moved:
                known = ", ".join(repr(n) for n in ledger.instances()) or "none"
                print(
                    f"ai-usage-exporter: instance {retire!r} has no rows in {ledger.url}; "
                    f"known: {known}",
                    file=sys.stderr,
                )
                return 1
            print(f"retired {retire!r}: {moved} rollup rows moved into '__retired__'")
            return 0
        for name, requests in ledger.instances().items():
            print(f"{name or '(unassigned)'}\t{requests}")
        return 0
    finally:
        ledger.close()


def prices(settings: Settings, provider: str | None, models: Sequence[str]) -> int:
    """Print the rates table; exit 1 when a model asked for has no price.

    With nothing asked and no overrides to list, print what the command can do.
    """
    book = build_price_book(settings)
    pairs = rate_pairs(book, provider, models)
    if not pairs:
        if provider is not None:
            print(
                f"ai-usage-exporter prices: no prices for provider {provider!r} in genai-prices "
                "or the overrides; check its spelling, or name models to look them up",
                file=sys.stderr,
            )
            return 1
        # Nothing asked and no overrides to show: say what the command can do.
        print(_parsers()[1]["prices"].format_help(), end="")
        return 0
    print(describe_rates(book, provider, models, pairs))
    named = set(models)
    unknown = [(p, m) for p, m in pairs if m in named and (p == "?" or book.rates(p, m) is None)]
    if unknown:
        hints = [
            f"{m!r} (did you mean {hint!r}?)" if (hint := book.suggest_model(p, m)) else repr(m)
            for p, m in unknown
        ]
        print(
            f"ai-usage-exporter prices: no price for {', '.join(hints)}: check "
            "the spelling, give --provider, or add it to a price override file "
            "(docs/pricing.md); events for it are counted as unpriced",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "reconcile":
        logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
        try:
            settings = resolve({k: getattr(args, k, None) for k in ("db", "config", "prices_file")})
            return reconcile.run(args, settings)
        except (ConfigError, PriceConfigError, LedgerError) as exc:
            print(f"ai-usage-exporter: {exc}", file=sys.stderr)
            return 2
    if args.command == "keys":
        try:
            settings = resolve({k: getattr(args, k, None) for k in ("db", "config")})
            return keys_command.run(args, settings)
        except (ConfigError, LedgerError) as exc:
            print(f"ai-usage-exporter: {exc}", file=sys.stderr)
            return 2
    if args.command in commands.COMMANDS:
        logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
        try:
            settings = resolve({k: getattr(args, k, None) for k in ("db", "config", "prices_file")})
            return commands.run(args, settings)
        except (ConfigError, PriceConfigError, LedgerError) as exc:
            print(f"ai-usage-exporter: {exc}", file=sys.stderr)
            return 2
    flags = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "models", "provider", "timeout", "name")
    }
    try:
        settings = resolve(flags)
        if args.command == "healthcheck":
            healthy, reason = healthcheck(settings, args.timeout)
            print(reason, file=sys.stdout if healthy else sys.stderr)
            return 0 if healthy else 1
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if args.command == "prices":
            return prices(settings, args.provider, args.models)
        if args.command in ("instances", "retire-instance"):
            return instances(settings, args.name if args.command == "retire-instance" else None)
        return serve(settings)
    except (ConfigError, PriceConfigError, LedgerError) as exc:
        print(f"ai-usage-exporter: {exc}", file=sys.stderr)
        return 2
