"""Benchmarks, run as `python3 -m bench.<name>` from the repository root."""
