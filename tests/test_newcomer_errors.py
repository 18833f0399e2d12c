"""The errors a new user meets first each name the cause and the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.settings import resolve
from ai_usage_exporter.ledger import LedgerError, open_ledger


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AI_USAGE_EXPORTER_")}
    return subprocess.run(
        [sys.executable, "-m", "ai_usage_exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **(env or {})},
    )


# ---------------------------------------------------------------- an unwritable ledger


@contextmanager
def _unwritable(path: Path) -> Iterator[None]:
    """Make `path` unwritable for this process, root included.

    Root ignores permission bits, so as root the path is made immutable (chattr +i),
    which binds root too; other users get plain chmod.
    """
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root, and chattr (e2fsprogs) is missing to make a path read-only")
    made = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"running as root, and this filesystem has no immutable flag: {made.stderr}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_ledger_in_a_directory_that_cannot_be_written(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    with _unwritable(locked), pytest.raises(LedgerError) as info:
        open_ledger(str(locked / "ai-usage.db"))
    message = str(info.value)
    assert message.startswith(
        f"cannot open ledger {locked / 'ai-usage.db'}: permission denied: cannot create files "
        f"in directory {locked} ("
    )
    assert "choose another path with --db" in message
    assert "unable to open database file" not in message


def test_a_ledger_file_that_exists_but_cannot_be_written(tmp_path: Path) -> None:
    path = tmp_path / "ai-usage.db"
    open_ledger(str(path)).close()
    with _unwritable(path):
        result = _cli("serve", "--db", str(path), "--port", "0")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"ai-usage-exporter: cannot open ledger {path}: permission denied: "
        f"cannot write the ledger file {path} ("
    )
    assert "readonly database" not in result.stderr


def test_a_ledger_path_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LedgerError) as info:
        open_ledger(str(tmp_path / "notes.txt" / "ai-usage.db"))
    assert str(info.value) == (
        f"cannot open ledger {tmp_path / 'notes.txt' / 'ai-usage.db'}: "
        f"{tmp_path / 'notes.txt'} is a file, not a directory; give a path in a directory"
    )


# ---------------------------------------------------------------- settings


def test_bad_synchronous_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("port: 9478\nsynchronous: fast\n")
    with pytest.raises(ConfigError) as info:
        resolve({"config": str(config)}, environ={})
    assert str(info.value) == (
        f"{config}:2: synchronous must be full (fsync each commit: survives power loss) "
        "or normal (survives a crash of the process), got 'fast'"
    )
    config.write_text("synchronous: off\n")
    with pytest.raises(ConfigError) as info:
        resolve({"config": str(config)}, environ={})
    assert str(info.value).startswith(f"{config}:1: synchronous must be full")
    assert str(info.value).endswith("got False (YAML reads an unquoted off, no or false as false)")
    with pytest.raises(ConfigError, match="^AI_USAGE_EXPORTER_SYNCHRONOUS: synchronous must"):
        resolve({}, environ={"AI_USAGE_EXPORTER_SYNCHRONOUS": "FULL"})


def test_log_level_takes_warn_and_warning() -> None:
    assert resolve({"log_level": "warn"}, environ={}).log_level == "warning"
    env = {"AI_USAGE_EXPORTER_LOG_LEVEL": "WARN"}
    assert resolve({}, environ=env).log_level == "warning"
    with pytest.raises(ConfigError, match="log level must be one of debug, info, warning, error"):
        resolve({}, environ={"AI_USAGE_EXPORTER_LOG_LEVEL": "verbose"})


def test_tokens_from_secret_files(tmp_path: Path) -> None:
    (tmp_path / "write").write_text("w-secret\n")
    (tmp_path / "read").write_text("r1,r2")
    env = {
        "AI_USAGE_EXPORTER_WRITE_TOKEN_FILE": str(tmp_path / "write"),
        "AI_USAGE_EXPORTER_READ_TOKEN_FILE": str(tmp_path / "read"),
    }
    s = resolve({}, environ=env)
    assert (s.write_tokens, s.read_tokens) == (("w-secret",), ("r1", "r2"))
    with pytest.raises(ConfigError) as info:
        resolve({}, environ={"AI_USAGE_EXPORTER_WRITE_TOKEN_FILE": str(tmp_path / "nope")})
    assert str(info.value) == (
        f"AI_USAGE_EXPORTER_WRITE_TOKEN_FILE={tmp_path / 'nope'}: cannot read the token file: "
        "No such file or directory; mount the secret there or unset the variable"
    )
    both = {**env, "AI_USAGE_EXPORTER_WRITE_TOKEN": "x"}
    with pytest.raises(ConfigError, match="both AI_USAGE_EXPORTER_WRITE_TOKEN and .*_FILE"):
        resolve({}, environ=both)


# ---------------------------------------------------------------- prices


def test_prices_without_arguments_says_what_it_can_do() -> None:
    result = _cli("prices")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ai-usage-exporter prices [-h] [--provider PROVIDER]")
    assert "ai-usage-exporter prices --provider anthropic" in result.stdout


def test_prices_for_an_unknown_model_exits_non_zero() -> None:
    result = _cli("prices", "gpt-4o-mini", "gpt-4o-mnii")
    assert result.returncode == 1
    rows = {line.split()[1]: line.split()[-1] for line in result.stdout.splitlines()[2:]}
    assert rows["gpt-4o-mnii"] == "unpriced"
    assert rows["gpt-4o-mini"] == "(openai/gpt-4o-mini)"
    assert result.stderr.startswith("ai-usage-exporter prices: no price for 'gpt-4o-mnii': ")
    result = _cli("prices", "--provider", "opneai")
    assert result.returncode == 1
    assert "no prices for provider 'opneai'" in result.stderr
