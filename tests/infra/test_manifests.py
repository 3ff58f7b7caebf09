"""infra/: every overlay builds with `kubectl kustomize`; core kinds validate strictly against the
Kubernetes schema; custom resources round-trip through typed models (an unknown or misspelt key makes
the round trip differ; the InferenceService is checked against KServe's CRD in test_inferenceservice.py);
the configs the trigger submits with are valid mixtune configs."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from hera.events import models as argo_events
from pydantic import BaseModel, ConfigDict

from components.common.config import parse_config

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ["local", "production"]
K8S_VERSION = "1.33.0"


def build(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (it builds kustomizations offline)")
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "infra" / "overlays" / overlay)],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"kubectl kustomize infra/overlays/{overlay} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, build(request.param)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert found, f"no {kind} {name}"
    return found[0]


def sensor_jobs(docs: list[dict]) -> list[dict]:
    return [t["template"]["k8s"]["source"]["resource"] for s in by_kind(docs, "Sensor") for t in s["spec"]["triggers"]]


def test_core_kinds_validate_strictly(overlay):
    name, docs = overlay
    core = [d for d in docs if not d["apiVersion"].startswith(("argoproj.io/", "serving.kserve.io/"))]
    core += sensor_jobs(docs)
    assert {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job"} <= {
        d["kind"] for d in core}
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_key():
    docs = build("local")
    deployment = copy.deepcopy(named(docs, "Deployment", "mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def roundtrip_argo(doc: dict) -> tuple[dict, dict]:
    """(what we wrote, what hera's model kept), both without apiVersion/kind, which hera drops.
    A Sensor's k8s trigger resource is an opaque blob to hera: it is checked as a Job instead."""
    doc = copy.deepcopy(doc)
    if doc["kind"] == "Sensor":
        for trigger in doc["spec"]["triggers"]:
            trigger["template"]["k8s"]["source"].pop("resource", None)
    model = getattr(argo_events, doc["kind"]).model_validate(doc)
    back = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}, back


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _JetStream(_Strict):
    version: str
    replicas: int


class _EventBusSpec(_Strict):
    jetstream: _JetStream


class _EventBus(_Strict):
    """hera has no EventBus model: the keys we use, from Argo Events' EventBus type (JetStreamBus)."""
    apiVersion: str
    kind: str
    metadata: dict
    spec: _EventBusSpec


def test_argo_events_resources_round_trip_through_typed_models(overlay):
    name, docs = overlay
    for kind in ("EventSource", "Sensor"):
        assert by_kind(docs, kind), f"{name}: no {kind}"
        for doc in by_kind(docs, kind):
            wrote, kept = roundtrip_argo(doc)
            assert kept == wrote, f"{name}: {kind} {doc['metadata']['name']} has keys the model does not know"
    for bus in by_kind(docs, "EventBus"):
        _EventBus.model_validate(bus)


def test_round_trip_catches_a_misspelt_sensor_key():
    sensor = copy.deepcopy(by_kind(build("local"), "Sensor")[0])
    sensor["spec"]["triggers"][0]["template"]["k8s"]["operaton"] = "create"
    wrote, kept = roundtrip_argo(sensor)
    assert kept != wrote


def test_sensor_starts_mixtune_submit_with_the_mounted_config(overlay):
    name, docs = overlay
    sensor = named(docs, "Sensor", "mixtune-new-chatlogs")
    source = named(docs, "EventSource", sensor["spec"]["dependencies"][0]["eventSourceName"])
    event = sensor["spec"]["dependencies"][0]["eventName"]
    assert any(event in spec for key, spec in source["spec"].items() if key != "template")
    [job] = sensor_jobs(docs)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][:3] == ["mixtune", "submit", "--if-new-data"]
    config_path = container["command"][container["command"].index("--config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_volume = next(n for n, v in volumes.items() if "configMap" in v)
    assert config_path.startswith(mounts[config_volume])
    named(docs, "ConfigMap", volumes[config_volume]["configMap"]["name"])  # the name kustomize kept
    assert volumes["kfp-token"]["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    named(docs, "ServiceAccount", pod["serviceAccountName"])
    assert pod["securityContext"]["runAsNonRoot"] is True


def trigger_config(docs: list[dict]):
    return parse_config(yaml.safe_load(named(docs, "ConfigMap", "mixtune-config")["data"]["mixtune.yaml"]))


def test_trigger_config_is_a_valid_mixtune_config_for_this_overlay(overlay):
    name, docs = overlay
    cfg = trigger_config(docs)
    for account in (cfg.cluster.service_account, cfg.train.kubernetes.service_account):
        named(docs, "ServiceAccount", account)
    assert cfg.train.launcher in ("trainjob", "pytorchjob")
    assert cfg.tracking.uri.startswith("http://mlflow.")
    assert cfg.data.sources and all(s.path.startswith(f"s3://{cfg.storage.bucket}/") for s in cfg.data.sources)
    images = {c["image"] for d in docs for c in
              d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])}
    assert cfg.images.cpu in images, "the trigger config and the manifests must name the same step image"


def permissions(docs: list[dict], account: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) that the Roles bound to a service account allow."""
    allowed = set()
    for binding in by_kind(docs, "RoleBinding"):
        if {"kind": "ServiceAccount", "name": account, "namespace": "mixtune"} in binding["subjects"]:
            role = named(docs, "Role", binding["roleRef"]["name"])
            allowed |= {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                        for v in rule["verbs"]}
    return allowed


def test_pipeline_service_account_may_create_training_jobs(overlay):
    name, docs = overlay
    allowed = permissions(docs, trigger_config(docs).cluster.service_account)
    for group, plural in (("trainer.kubeflow.org", "trainjobs"), ("kubeflow.org", "pytorchjobs")):
        for verb in ("create", "get"):
            assert (group, plural, verb) in allowed


def test_production_uses_roles_not_keys():
    docs = build("production")
    cfg = trigger_config(docs)
    assert cfg.cluster.s3_secret is None and cfg.train.kubernetes.credentials_secret is None
    assert cfg.storage.endpoint_url is None
    for account in by_kind(docs, "ServiceAccount"):
        if account["metadata"]["name"] != "mixtune-sensor":  # it only creates a Job in the cluster
            assert "eks.amazonaws.com/role-arn" in account["metadata"].get("annotations", {}), account["metadata"]
    assert not by_kind(docs, "StatefulSet"), "production uses a managed PostgreSQL"
    assert not [d for d in docs if d["metadata"]["name"].startswith("minio")]


def test_production_trigger_runs_the_retraining_loop():
    """Each batch retrains the champion on the multi-task mixture with replay from its lineage, scored on every
    task it was gated on (configs/continual.yaml on one machine), not the base model on the chat logs alone."""
    cfg = trigger_config(build("production"))
    assert cfg.model.base == f"models:/{cfg.registry.model_name}@champion" and cfg.model.initial_base
    assert cfg.templates.mixture.replay.from_ == "champion" and cfg.templates.mixture.replay.ratio > 0
    trigger = cfg.cluster.trigger
    assert trigger.new_files_only and trigger.watch_sources
    public = [s for s in cfg.data.sources if s.name not in trigger.watch_sources]
    assert public, "public task data beside the chat logs: the multi-task mixture"
    assert len(cfg.evaluate.tasks) > 1 and set(cfg.evaluate.tasks) <= set(cfg.templates.tasks or cfg.evaluate.tasks)
    assert cfg.evaluate.per_source and cfg.evaluate.include_champion_set


def test_no_literal_secret_in_any_manifest(overlay):
    name, docs = overlay
    assert not by_kind(docs, "Secret"), "Secrets are created out of band, never kept in the repo"
    sensitive = ("KEY", "SECRET", "PASSWORD", "TOKEN")

    def walk(node, path):
        if isinstance(node, dict):
            if "name" in node and "value" in node and isinstance(node["name"], str) and node["name"].isupper():
                is_path = str(node["value"]).startswith("/")
                assert is_path or not any(s in node["name"] for s in sensitive), \
                    f"{name}: {path}: {node['name']} has a literal value"
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    for doc in docs:
        walk(doc, f"{doc['kind']}/{doc['metadata']['name']}")
    text = json.dumps(docs)
    assert "AKIA" not in text and "BEGIN PRIVATE KEY" not in text
