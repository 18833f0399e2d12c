"""Find the external programs the Prometheus tests drive: promtool, prometheus, amtool.

Locally a missing program skips the test with the reason; in CI (`CI=true`) it
fails it, so a runner without Prometheus cannot turn those tests green by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

# Debian installs Alertmanager as prometheus-alertmanager; upstream tarballs as alertmanager.
ALIASES: dict[str, tuple[str, ...]] = {
    "prometheus-alertmanager": ("prometheus-alertmanager", "alertmanager"),
}

INSTALL_HINT = "install it (Debian: apt-get install prometheus prometheus-alertmanager)"


def in_ci() -> bool:
    """Whether we run in CI, where missing programs are errors, not skips."""
    return os.environ.get("CI", "").lower() == "true"


def find_binary(name: str) -> str | None:
    """Return the path of program `name` (or its known aliases) on PATH, else None."""
    for candidate in ALIASES.get(name, (name,)):
        path = shutil.which(candidate)
        if path is not None:
            return path
    return None


def require_binary(name: str) -> str:
    """Return the path of `name`; skip the test if it is missing, or fail it in CI."""
    path = find_binary(name)
    if path is not None:
        return path
    message = f"{name} not found on PATH: {INSTALL_HINT}"
    if in_ci():
        pytest.fail(f"{message} (CI=true, so this is an error, not a skip)")
    pytest.skip(message)
