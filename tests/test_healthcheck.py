"""`ai-usage-exporter healthcheck`, the container's HEALTHCHECK, against a running
sidecar: it follows the configured port, and speaks HTTPS when TLS is configured."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from _binaries import require_binary
from _server import free_port, server_process

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}


def _healthcheck(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # The console script, as the Dockerfile's HEALTHCHECK runs it.
    script = Path(sys.executable).with_name("ai-usage-exporter")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ai_usage_exporter"]
    return subprocess.run(
        [*command, "healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**CLEAN_ENV, **env},
    )


def test_plain_http_on_the_configured_port(tmp_path: Path) -> None:
    with server_process(tmp_path / "l.db") as server:
        port = str(server.port)
        ok = _healthcheck({"AI_USAGE_EXPORTER_PORT": port})
        assert (ok.returncode, ok.stdout, ok.stderr) == (
            0,
            f"ok: http://127.0.0.1:{port}/healthz answered 200\n",
            "",
        )
        # The container listens on 0.0.0.0; the probe goes to loopback. The port may
        # come from the config file the server reads, too.
        config = tmp_path / "config.yml"
        config.write_text(f"host: 0.0.0.0\nport: {port}\n")
        ok = _healthcheck({"AI_USAGE_EXPORTER_CONFIG": str(config)})
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == f"ok: http://127.0.0.1:{port}/healthz answered 200\n"
    down = _healthcheck({"AI_USAGE_EXPORTER_PORT": port})
    assert down.returncode == 1
    assert down.stdout == ""
    assert down.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz: ")
    assert "refused" in down.stderr
    assert down.stderr.count("\n") == 1


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    openssl = require_binary("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=ai-usage-exporter.example", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key, cert


@pytest.fixture
def tls_sidecar(tmp_path: Path, certificate: tuple[Path, Path]) -> Iterator[dict[str, str]]:
    """A sidecar serving HTTPS only; yields the environment that configures it."""
    key, cert = certificate
    env = {
        "AI_USAGE_EXPORTER_PORT": str(free_port()),
        "AI_USAGE_EXPORTER_DB": str(tmp_path / "tls.db"),
        "AI_USAGE_EXPORTER_SSL_KEYFILE": str(key),
        "AI_USAGE_EXPORTER_SSL_CERTFILE": str(cert),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ai_usage_exporter", "serve"],
        env={**CLEAN_ENV, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while _healthcheck(env, "--timeout", "1").returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"the TLS sidecar did not come up:\n{out}")
            time.sleep(0.1)
        yield env
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_https_when_tls_is_configured(tls_sidecar: dict[str, str]) -> None:
    port = tls_sidecar["AI_USAGE_EXPORTER_PORT"]
    ok = _healthcheck(tls_sidecar)
    assert (ok.returncode, ok.stdout) == (0, f"ok: https://127.0.0.1:{port}/healthz answered 200\n")
    # The same probe without the TLS settings speaks plain HTTP to it, and fails.
    plain = {k: v for k, v in tls_sidecar.items() if "SSL" not in k}
    bad = _healthcheck(plain)
    assert bad.returncode == 1
    assert bad.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz")
    assert bad.stderr.endswith(
        "; the port speaks HTTPS: give healthcheck the server's TLS settings "
        "(AI_USAGE_EXPORTER_SSL_CERTFILE and _KEYFILE, or tls: in --config)\n"
    )


def test_https_probe_of_a_plain_port_says_so(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    key, cert = certificate
    with server_process(tmp_path / "p.db") as server:
        env = {
            "AI_USAGE_EXPORTER_PORT": str(server.port),
            "AI_USAGE_EXPORTER_SSL_KEYFILE": str(key),
            "AI_USAGE_EXPORTER_SSL_CERTFILE": str(cert),
        }
        bad = _healthcheck(env)
    assert bad.returncode == 1
    assert bad.stderr.startswith(f"unhealthy: https://127.0.0.1:{server.port}/healthz: ")
    assert bad.stderr.endswith(
        "; the port does not speak TLS (plain HTTP?): start the server with the same "
        "certificate, or drop the TLS settings here\n"
    )
