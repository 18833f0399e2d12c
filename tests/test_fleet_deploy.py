"""The Kubernetes example parses, and what it gives the sidecar is what the code reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_usage_exporter import Recorder
from ai_usage_exporter.cli.main import _parser
from ai_usage_exporter.config.settings import ENV_PREFIX, from_env, resolve
from ai_usage_exporter.server import create_app

KUSTOMIZE = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


def _documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text("utf-8"))
    assert kustomization["kind"] == "Kustomization"
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs.extend(yaml.safe_load_all((KUSTOMIZE / resource).read_text("utf-8")))
    listed = {str(r) for r in kustomization["resources"]}
    assert listed == {p.name for p in KUSTOMIZE.glob("*.yaml")} - {"kustomization.yaml"}
    return docs


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _sidecar(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == "ai-usage-exporter"
    ]  # fmt: skip
    found: dict[str, Any] = container
    return found


def _env(container: dict[str, Any], secret: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the pod would see it."""
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            env[var["name"]] = secret["stringData"][ref["key"]]
        else:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = pod_name
    return env


def test_the_sidecar_gets_flags_and_environment_the_code_reads(tmp_path: Path) -> None:
    docs = _documents()
    deployment, secret = _one(docs, "Deployment"), _one(docs, "Secret")
    sidecar = _sidecar(deployment)
    env = _env(sidecar, secret, "my-app-7d9f8-x2x4q")
    ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    # Every AI_USAGE_EXPORTER_* variable it sets is one the settings read.
    for name, value in ours.items():
        assert from_env({name: value}), f"{name} is not read by config.from_env"
    # Kubernetes expands $(VAR) in args from the container's environment.
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in sidecar["args"]]
    parsed = vars(_parser().parse_args(["serve", *args]))
    flags = {k: v for k, v in parsed.items() if k != "command"}
    settings = resolve(flags, env)
    assert settings.instance == "my-app-7d9f8-x2x4q"
    assert settings.host == "0.0.0.0"
    assert settings.db.startswith("postgresql://")
    assert settings.write_tokens == (secret["stringData"]["write-token"],)
    assert settings.read_tokens == (secret["stringData"]["read-token"],)

    (port,) = sidecar["ports"]
    assert port["containerPort"] == settings.port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert sidecar[probe]["httpGet"] == {"path": path, "port": port["name"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.port)
    # The app posts to the sidecar over the pod's loopback, with the write token.
    (app,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c is not sidecar]
    app_env = _env(app, secret, "pod")
    assert app_env["AI_USAGE_URL"] == f"http://127.0.0.1:{settings.port}/api/usage"
    assert app_env["AI_USAGE_TOKEN"] == secret["stringData"]["write-token"]


def test_service_and_servicemonitor_reach_routes_the_app_serves(tmp_path: Path) -> None:
    docs = _documents()
    deployment, service = _one(docs, "Deployment"), _one(docs, "Service")
    monitor, secret = _one(docs, "ServiceMonitor"), _one(docs, "Secret")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in service["spec"]["ports"]}
    with Recorder(str(tmp_path / "l.db"), instance="x") as recorder:
        paths = {getattr(route, "path", "") for route in create_app(recorder).routes}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in paths
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] in paths
        creds = endpoint["authorization"]["credentials"]
        assert creds["name"] == secret["metadata"]["name"]
        assert creds["key"] in secret["stringData"]
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics", "/metrics/fleet"}


@pytest.mark.parametrize("name", ["deployment.yaml", "service.yaml", "servicemonitor.yaml"])
def test_every_manifest_has_kind_and_name(name: str) -> None:
    for doc in yaml.safe_load_all((KUSTOMIZE / name).read_text("utf-8")):
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
