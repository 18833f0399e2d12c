"""Each benchmark's --smoke mode runs to the end; no timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_smoke(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"bench.{name} --smoke exited {proc.returncode}:\n{proc.stderr}"


def test_every_question_has_a_script() -> None:
    assert {"record", "pricing", "ingest", "scrape", "restart"} <= set(SCRIPTS)
