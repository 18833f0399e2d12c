"""What every benchmark script shares: the --smoke flag, the machine line, and ratios."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Sequence

# Priced models the synthetic ledgers of bench.restart and bench.dashboard spread over.
MODELS = (
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("openai", "o3-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("gemini", "gemini-2.5-flash"),
    ("groq", "llama-3.3-70b-versatile"),
    ("deepseek", "deepseek-chat"),
)


def parse_args(doc: str | None, argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    p.add_argument(
        "--smoke", action="store_true", help="a tiny run that only checks the script works"
    )
    return p.parse_args(argv)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    return (
        f"machine: nproc={os.cpu_count()}, cpu={cpu_model()!r}, "
        f"python={platform.python_version()} ({platform.python_implementation()})"
    )


def p50(values: Sequence[float]) -> float:
    return statistics.median(values)


def rss_kib() -> int:
    """Resident set size of this process from /proc/self/status (VmRSS), in KiB."""
    return _status_kib("VmRSS")


def peak_rss_kib() -> int:
    """Peak resident set size of this process (VmHWM), in KiB."""
    return _status_kib("VmHWM")


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"
