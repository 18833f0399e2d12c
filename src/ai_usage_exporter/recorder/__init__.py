"""The recorder: price each event, commit it to the ledger once, then count it.

`Recorder` (in `recorder`) owns the writer thread, the counters and readiness;
`budget_metrics`, `bucketcache` and `usagelog` are its parts. Imports from `ledger`,
`config` and `core` only.
"""

from __future__ import annotations

from ai_usage_exporter.recorder.recorder import (
    Recorder,
    RecorderBusyError,
    RecorderClosedError,
    RecordResult,
)

__all__ = ("RecordResult", "Recorder", "RecorderBusyError", "RecorderClosedError")
