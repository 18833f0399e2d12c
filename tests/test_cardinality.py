"""Label caps: past the cap, new values fold into `__other__`; no increment is lost, the
folds are counted, and the JSON view keeps the real names."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from _server import exposition_samples
from ai_usage_exporter.recorder.recorder import Recorder

MODELS = [f"model-{i:02d}" for i in range(20)]


def test_models_past_the_cap_fold_into_other(tmp_path: Path) -> None:
    with Recorder(str(tmp_path / "ledger.db"), CollectorRegistry(), label_caps={"model": 5}) as rec:
        # Model i gets i + 1 events, each in its own commit, so the first five admitted
        # are model-00..model-04.
        for i, model in enumerate(MODELS):
            events = [
                {"provider": "openai", "model": model, "input_tokens": 10, "output_tokens": 1}
            ] * (i + 1)
            assert rec.record_many(events).accepted == i + 1
        samples = exposition_samples(rec.exposition().decode())
        view = rec.view(limit=100)

    requests = {
        dict(labels)["model"]: value
        for (name, labels), value in samples.items()
        if name == "ai_requests_total"
    }
    assert requests == {
        "model-00": 1.0,
        "model-01": 2.0,
        "model-02": 3.0,
        "model-03": 4.0,
        "model-04": 5.0,
        "__other__": float(sum(range(6, 21))),
    }
    total_events = sum(range(1, 21))
    assert sum(requests.values()) == total_events

    input_tokens = {
        dict(labels)["model"]: value
        for (name, labels), value in samples.items()
        if name == "ai_tokens_total" and dict(labels)["type"] == "input"
    }
    assert input_tokens["__other__"] == 10.0 * sum(range(6, 21))
    assert sum(input_tokens.values()) == 10.0 * total_events

    folded = {
        dict(labels)["label"]: value
        for (name, labels), value in samples.items()
        if name == "ai_exporter_label_values_folded_total"
    }
    assert folded == {
        "service": 0.0,
        "provider": 0.0,
        "model": float(sum(range(6, 21))),
        "operation": 0.0,
    }

    by_model = {m["model"]: m["requests"] for m in view["by_model"]}
    assert by_model == {model: i + 1 for i, model in enumerate(MODELS)}
    assert view["totals"]["requests"] == total_events


def test_a_folded_value_stays_folded_and_an_admitted_one_stays_real(tmp_path: Path) -> None:
    with Recorder(str(tmp_path / "ledger.db"), CollectorRegistry(), label_caps={"model": 2}) as rec:
        for model in ["a", "b", "c", "a", "c", "d", "b"]:
            rec.record_many([{"provider": "p", "model": model}])
        samples = exposition_samples(rec.exposition().decode())
    requests = {
        dict(labels)["model"]: value
        for (name, labels), value in samples.items()
        if name == "ai_requests_total"
    }
    assert requests == {"a": 2.0, "b": 2.0, "__other__": 3.0}
    assert samples[("ai_exporter_label_values_folded_total", frozenset({("label", "model")}))] == 3
