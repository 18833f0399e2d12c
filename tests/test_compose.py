"""`compose`: the one place Settings become a price book, a ledger and a recorder."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from ai_usage_exporter.compose import build_ledger, build_price_book, build_recorder
from ai_usage_exporter.config.settings import resolve
from ai_usage_exporter.core.pricing.rates import Rates


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def test_a_sidecar_recorder_takes_every_setting(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "prices:\n  providers:\n    acme:\n      models:\n"
        "        m1: {input: 2.0, output: 4.0}\n"
        "labels: {extra: [tenant]}\n",
    )
    usage_log = tmp_path / "usage.jsonl"
    settings = resolve(
        {
            "db": str(tmp_path / "a.db"),
            "config": config,
            "instance": "side-1",
            "usage_log": str(usage_log),
        },
        environ={},
    )
    registry = CollectorRegistry()
    with build_recorder(settings, registry=registry) as rec:
        assert rec.instance == "side-1"
        assert rec.state.extra_labels == ("tenant",)
        rec.record(
            provider="acme",
            model="m1",
            tenant="t1",
            usage={"prompt_tokens": 1_000_000, "completion_tokens": 500_000},
        )
        rec.flush()
        labels = {"provider": "acme", "model": "m1", "service": "default", "tenant": "t1"}
        cost = registry.get_sample_value("ai_cost_total", {**labels, "type": "total"})
        assert cost == 4.0
    assert '"model":"m1"' in usage_log.read_text()


def test_a_tools_recorder_writes_the_unassigned_rows(tmp_path: Path) -> None:
    settings = resolve({"db": str(tmp_path / "a.db"), "instance": "side-1"}, environ={})
    with build_recorder(settings, role="tool") as rec:
        assert rec.instance == ""  # no sidecar's name: the rows stay unassigned
        rec.record(provider="openai", model="gpt-4o-mini", input_tokens=3, output_tokens=1)
    ledger = build_ledger(settings)
    try:
        assert ledger.instances() == {"": 1}
    finally:
        ledger.close()
    # The sidecar that opens the ledger next adopts them.
    with build_recorder(settings) as sidecar:
        assert sidecar.instance == "side-1"
    ledger = build_ledger(settings)
    try:
        assert ledger.instances() == {"side-1": 1}
    finally:
        ledger.close()


def test_the_price_book_comes_from_the_prices_file_first(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yml"
    prices.write_text("providers:\n  acme:\n    models:\n      m1: {input: 1.0, output: 1.0}\n")
    config = _config(
        tmp_path,
        "prices:\n  providers:\n    acme:\n      models:\n        m1: {input: 9.0, output: 9.0}\n",
    )
    settings = resolve({"prices_file": str(prices), "config": config}, environ={})
    assert (build_price_book(settings).rates("acme", "m1") or _none()).input == 1.0
    book = build_price_book(resolve({"config": config}, environ={}))
    assert (book.rates("acme", "m1") or _none()).input == 9.0


def _none() -> Rates:
    raise AssertionError("no rates")
