"""The README's OTLP mapping table is the one the code makes."""

from __future__ import annotations

from pathlib import Path

from ai_usage_exporter.otlp.families import mapping_table


def test_the_readme_mapping_table_is_made_from_the_code() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert mapping_table() in readme
