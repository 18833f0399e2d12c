"""The pure core: the event schema, provider shapes, pricing, rollups, reports and metrics.

Nothing here does I/O beyond reading the packaged price data, and nothing here imports
from a higher layer (`config`, `ledger`, `recorder`, `compose` or any edge); see
docs/architecture.md.
"""
