"""deploy/kubernetes (docs/cluster.md): every manifest is valid against the Kubernetes schemas, offline
(kubernetes-validate bundles them; strict: an unknown field is an error), and the pieces fit together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37.0"  # the newest schemas the pinned kubernetes-validate bundles


def documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    out = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
            if doc:
                out.append((name, doc))
    return out


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == kind}


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize(("name", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_is_valid_offline(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises with the path of the problem


def test_the_validator_catches_a_typo() -> None:
    doc = by_kind("PodDisruptionBudget")["nuviot-worker"]
    bad = {**doc, "spec": {**doc["spec"], "minAvailabel": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_roles_probes_budgets_and_secrets_fit_together() -> None:
    deployments = by_kind("Deployment")
    config = by_kind("ConfigMap")["nuviot-runtime"]["data"]
    secret = by_kind("Secret")["nuviot-runtime"]["stringData"]
    assert set(secret) == {"NUVIOT_ADMIN_TOKEN", "NUVIOT_QUEUE_URL", "NUVIOT_DATABASE_URL"}
    assert not {k for k in config if "TOKEN" in k or "URL" in k}, "secrets belong in the Secret"
    budgets = by_kind("PodDisruptionBudget")
    for role in ("ingest", "worker"):
        dep = deployments[f"nuviot-{role}"]
        pod = dep["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["args"] == ["run", "--role", role]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"nuviot-runtime"}
        # the grace period covers the stop budget (listeners, drain, transmitters) plus the last acks
        assert pod["spec"]["terminationGracePeriodSeconds"] >= float(config["NUVIOT_STOP_TIMEOUT"]) + 5
        labels = pod["metadata"]["labels"]
        selector = budgets[f"nuviot-{role}"]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = by_kind("Service")["nuviot-ingest"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "ingest"
    ports = {p["name"] for p in deployments["nuviot-ingest"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
