from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ai_usage_exporter.config.fields import ConfigError
from ai_usage_exporter.config.settings import Settings, resolve


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    s = resolve({}, environ={})
    assert (s.host, s.port, s.db, s.synchronous) == ("127.0.0.1", 9478, "ai-usage.db", "full")
    assert s == Settings()


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "host: 10.0.0.1\nport: 9000\ndb: file.db\nlabels:\n  extra: [tenant]\n  caps: {model: 7}\n",
    )
    env = {
        "AI_USAGE_EXPORTER_PORT": "9100",
        "AI_USAGE_EXPORTER_DB": "env.db",
        "AI_USAGE_EXPORTER_CONFIG": path,
    }
    s = resolve({"db": "flag.db", "port": None}, environ=env)
    assert (s.host, s.port, s.db) == ("10.0.0.1", 9100, "flag.db")
    assert s.extra_labels == ("tenant",)
    assert s.label_caps == {"model": 7}


def test_tokens_from_environment_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "auth:\n  write_tokens: [w1, w2]\n  read_tokens: r1\n")
    s = resolve({"config": path}, environ={"AI_USAGE_EXPORTER_READ_TOKEN": "r2,r3"})
    assert s.write_tokens == ("w1", "w2")
    assert s.read_tokens == ("r2", "r3")


def test_limits_section(tmp_path: Path) -> None:
    s = resolve({"config": _write(tmp_path, "limits:\n  max_events_per_request: 50\n")}, environ={})
    assert s.limits.max_events_per_request == 50


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host: a\nprot: 1\n", "config.yml:2: unknown setting 'prot'"),
        ("labels:\n  extra: [user]\n", "config.yml:2: 'user' cannot be a Prometheus label"),
        ("labels:\n  caps:\n    model: 0\n", "config.yml:3: must be >= 1, got 0"),
        ("auth:\n  write_token: x\n", "config.yml:2: unknown key 'write_token'"),
        ("store_text: maybe\n", "config.yml:1: expected true or false, got 'maybe'"),
        ("port: [1]\n", "config.yml:1: expected an integer"),
        ("host: a\nhost: b\n", "config.yml:2: duplicate key 'host'"),
    ],
)
def test_config_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"config": _write(tmp_path, text)}, environ={})
    assert message in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        resolve({"config": str(tmp_path / "nope.yml")}, environ={})


def test_prices_command_prints_rates_and_sources() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ai_usage_exporter", "prices", "--provider", "openai", "gpt-4o-mini"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "gpt-4o-mini" in out.stdout
    assert "0.15" in out.stdout and "0.6" in out.stdout
    assert "genai-prices" in out.stdout


def test_serve_reports_a_bad_config_and_exits_2(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ai_usage_exporter", "serve", "--config", _write(tmp_path, "prot: 1\n")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "unknown setting 'prot'" in out.stderr


def test_retention_timeseries_and_usage_log_settings(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "retention: 90d\n"
        "timeseries:\n  minute_retention: 36h\n  hour_retention: off\n"
        "usage_log:\n  path: logs/usage.log\n  max_bytes: 2048\n  backups: 0\n",
    )
    s = resolve({"config": path}, environ={})
    assert (s.retention, s.minute_retention, s.hour_retention) == (90 * 86400, 36 * 3600, None)
    assert (s.usage_log, s.usage_log_max_bytes, s.usage_log_backups) == ("logs/usage.log", 2048, 0)
    # Off, forever and a bare path; the defaults otherwise.
    s = resolve({"config": _write(tmp_path, "retention: forever\nusage_log: u.log\n")}, environ={})
    assert (s.retention, s.minute_retention, s.hour_retention) == (None, 7 * 86400, 400 * 86400)
    assert (s.usage_log, s.usage_log_max_bytes, s.usage_log_backups) == ("u.log", 100 * 2**20, 5)
    assert resolve({"config": _write(tmp_path, "retention: off\n")}, environ={}).retention is None
    assert resolve({"config": _write(tmp_path, "retention: 3600\n")}, environ={}).retention == 3600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "retention: soon\n",
            "config.yml:1: expected a duration such as 90d, 12h or 2w, got 'soon'",
        ),
        ("retention: 0d\n", "config.yml:1: expected a duration such as 90d, 12h or 2w, got '0d'"),
        ("db: a\ntimeseries:\n  minute_retention: 5x\n", "config.yml:3: expected a duration"),
        ("timeseries:\n  day_retention: 1d\n", "config.yml:2: unknown key 'day_retention'"),
        ("timeseries: 7d\n", "config.yml:1: expected a mapping, got '7d'"),
        ("usage_log:\n  backups: 1\n", "config.yml:1: usage_log needs a path"),
        ("usage_log:\n  path: u.log\n  max_bytes: 10\n", "config.yml:3: must be >= 1024, got 10"),
        ("usage_log:\n  path: u.log\n  backups: -1\n", "config.yml:3: must be >= 0, got -1"),
        ("usage_log:\n  path: u.log\n  rotate: 1\n", "config.yml:3: unknown key 'rotate'"),
    ],
)
def test_retention_and_usage_log_errors_name_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"config": _write(tmp_path, text)}, environ={})
    assert message in str(info.value)
