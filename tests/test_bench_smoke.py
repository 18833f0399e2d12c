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


def test_every_script_has_a_summary_row_and_a_section_in_benchmarks_md() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    summary = text.split("## Latest results", 1)[1].split("\n### ", 1)[0]
    rows = {n for n in SCRIPTS if f"| `python3 -m bench.{n}` |" in summary}
    sections = {n for n in SCRIPTS if f"— `python3 -m bench.{n}`" in text}
    assert (sorted(set(SCRIPTS) - rows), sorted(set(SCRIPTS) - sections)) == ([], [])
