"""What a new user tripped on, walking the README: each answer now names the way out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _server import ServerProcess, free_port
from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.gateway import parse_gateway, read_keys
from ai_usage_exporter.config.settings import resolve

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai_usage_exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**CLEAN_ENV, **(env or {})},
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("retension: 90d\n", "c.yml:1: unknown setting 'retension'; did you mean 'retention'? "),
        ("labels:\n  extras: [tenant]\n", "c.yml:2: unknown key 'extras'; did you mean 'extra'? "),
        ("zzz: 1\n", "c.yml:1: unknown setting 'zzz'; known: allow_unauthenticated, auth, "),
    ],
)
def test_a_config_typo_gets_the_name_it_missed(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        resolve({"config": str(path)}, {})
    assert str(info.value).startswith(f"{path.parent}/{message}")


def test_every_missing_gateway_key_variable_is_named_at_once() -> None:
    gw = parse_gateway(
        {
            "upstreams": {
                "a": {"provider": "openai", "base_url": "https://x", "api_key_env": "KEY_A"},
                "b": {"provider": "deepseek", "base_url": "https://y", "api_key_env": "KEY_B"},
                "c": {"provider": "groq", "base_url": "https://z", "api_key_env": "KEY_C"},
            }
        },
        "c.yaml",
    )
    with pytest.raises(ConfigError) as info:
        read_keys(gw, {"KEY_B": "sk-b"})
    assert str(info.value) == (
        "gateway: environment variables KEY_A (upstream 'a'), KEY_C (upstream 'c') are not "
        "set or empty; set each to its provider's API key"
    )


@pytest.mark.parametrize("content", ["", "\n", "  \n", ","])
def test_an_empty_token_file_is_an_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "write_token"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        resolve({}, {"AI_USAGE_EXPORTER_WRITE_TOKEN_FILE": str(path)})
    assert str(info.value) == (
        f"AI_USAGE_EXPORTER_WRITE_TOKEN_FILE={path}: the token file is empty; put the token "
        "in it, or unset the variable to run without one"
    )


def test_top_level_help_points_at_commands_not_source_files() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    assert ".py" not in out.stdout
    assert "ai-usage-exporter COMMAND --help" in " ".join(out.stdout.split())


def test_a_second_serve_on_one_sqlite_file_refuses(tmp_path: Path) -> None:
    db = tmp_path / "ai-usage.db"
    first = ServerProcess(db)
    try:
        second = _cli("serve", "--db", str(db), "--port", str(free_port()))
        assert second.returncode == 2
        assert second.stdout == ""
        assert second.stderr == (
            f"ai-usage-exporter: another `serve` (pid {first.proc.pid}) is using the SQLite "
            f"ledger {db}: a SQLite file is one sidecar's ledger, and two would each count "
            "its events in their /metrics. Stop it, give this one its own --db, or share a "
            "PostgreSQL ledger between sidecars (README: A fleet on one PostgreSQL)\n"
        )
    finally:
        assert first.terminate() == 0
    # Once it is gone, the file is free again.
    again = ServerProcess(db)
    assert again.terminate() == 0


def test_import_follow_prints_its_summary_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(
        '{"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 5, "output_tokens": 1}\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ai_usage_exporter", "import", "-F", str(log),
         "--db", str(tmp_path / "l.db")],
        env=CLEAN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with log.open("a") as f:
            time.sleep(1.5)
            f.write('{"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 7}\n')
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "stopped (SIGTERM); the checkpoint resumes after the last line read"
    assert lines[1] == ("lines read 2, events accepted 2, duplicate 0, lines rejected 0, skipped 0")
