"""The champion's InferenceService: every overlay's, and every body the deploy step sends, fit KServe
v0.20's CRD schema with no unknown key; the manifest is what the deploy step writes from the overlay's
config; its service account, S3 access and RBAC resolve in that overlay."""
from __future__ import annotations

import copy

import pytest

from components.deploy import manifest as m
from tests.infra.crd_schema import check, crd_schema, merge_patch, unknown_keys
from tests.infra.test_manifests import overlay  # noqa: F401 (the fixture: each overlay, built)
from tests.infra.test_manifests import build, by_kind, named, permissions, trigger_config


def isvc(docs: list[dict]) -> dict:
    [found] = by_kind(docs, "InferenceService")
    return found


def manifest_target(doc: dict) -> m.Target:
    """The version the manifest names (the placeholder until the first deploy)."""
    env = {e["name"]: e["value"] for e in doc["spec"]["predictor"]["containers"][0]["env"]}
    return m.Target(env["MIXTUNE_MODEL_NAME"], env["MIXTUNE_MODEL_VERSION"], env["STORAGE_URI"])


def test_inferenceservice_fits_the_crd_schema(overlay):
    name, docs = overlay
    assert check(isvc(docs), crd_schema()) == [], f"{name}: the InferenceService does not fit KServe's CRD"


def test_crd_check_catches_misspelt_and_mistyped_keys():
    schema, good = crd_schema(), isvc(build("production"))
    bad = copy.deepcopy(good)
    container = bad["spec"]["predictor"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    bad["spec"]["predictor"]["canaryTrafficPercnt"] = 10
    bad["metadata"]["anotations"] = {}
    assert unknown_keys(bad, schema) == ["metadata.anotations", "spec.predictor.containers[0].readinesProbe",
                                         "spec.predictor.canaryTrafficPercnt"]
    typed = copy.deepcopy(good)
    typed["spec"]["predictor"]["minReplicas"] = "two"
    del typed["spec"]["predictor"]["containers"][0]["name"]
    problems = check(typed, schema)
    assert any("minReplicas" in p and "'two' is not of type 'integer'" in p for p in problems), problems
    assert any("'name' is a required property" in p for p in problems), problems
    assert check(good, schema) == []


def test_manifest_is_what_the_deploy_step_writes(overlay):
    name, docs = overlay
    doc, cfg = isvc(docs), trigger_config(docs)
    k = cfg.serve.kubernetes
    assert k.enabled, f"{name}: the overlay's config should keep the InferenceService on the champion"
    written = m.inference_service(cfg, manifest_target(doc))
    assert doc["spec"] == written["spec"], f"{name}: manifest and components/deploy/manifest.py differ"
    assert doc["metadata"]["annotations"] == written["metadata"]["annotations"]
    assert (doc["metadata"]["name"], doc["metadata"]["namespace"]) == (k.name, k.namespace)
    assert written["metadata"]["labels"].items() <= doc["metadata"]["labels"].items()
    container = doc["spec"]["predictor"]["containers"][0]
    assert container["name"] == "kserve-container" and container["image"] == cfg.images.cpu
    assert container["command"] == ["python", "-m", "components.serve", "--model-uri", "/mnt/models",
                                    "--host", "0.0.0.0", "--port", "8080"]
    probes = {p: (container[p]["httpGet"]["path"], container[p]["httpGet"]["port"])
              for p in ("readinessProbe", "livenessProbe")}
    assert probes == {"readinessProbe": ("/ready", 8080), "livenessProbe": ("/health", 8080)}
    assert container["resources"]["requests"] == {"cpu": k.cpu, "memory": k.memory}


@pytest.mark.parametrize("mode", ["serverless", "standard"])
def test_every_body_the_deploy_step_sends_fits_the_crd_schema(mode):
    schema, docs = crd_schema(), build("production")
    cfg = trigger_config(docs)
    cfg.serve.kubernetes.mode = mode
    new = m.Target(cfg.registry.model_name, "7", "s3://acme-mixtune/runs/r7/train/model")
    old = m.Target(cfg.registry.model_name, "6", "s3://acme-mixtune/runs/r6/train/model")
    live = m.inference_service(cfg, old)
    assert check(m.inference_service(cfg, new), schema) == []
    steps = [m.version_patch(cfg, new, 10), m.full_traffic_patch(), m.version_patch(cfg, old, 0)]
    for patch in steps:  # deploy with a canary, all traffic, restore
        live = merge_patch(live, patch)
        assert check(live, schema) == [], patch
    assert m.served_version(live) == "6"
    if mode == "serverless":
        assert live["spec"]["predictor"]["canaryTrafficPercent"] == 0
        assert live["metadata"]["annotations"][m.TAG_ROUTING_ANNOTATION] == "true"
    else:
        assert "canaryTrafficPercent" not in live["spec"]["predictor"]
        assert live["spec"]["predictor"]["deploymentStrategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_serving_identity_and_rbac(overlay):
    name, docs = overlay
    doc, cfg = isvc(docs), trigger_config(docs)
    account = named(docs, "ServiceAccount", doc["spec"]["predictor"]["serviceAccountName"])
    assert account["metadata"]["name"] == cfg.serve.kubernetes.service_account
    assert account.get("automountServiceAccountToken") is False
    if name == "production":  # IRSA: the storage initializer gets S3 from the role, no keys anywhere
        assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
        assert "secrets" not in account
    else:  # KServe reads S3 keys from a Secret listed on the account, created out of band
        assert account["secrets"] == [{"name": "mixtune-serve-s3"}]
    allowed = permissions(docs, cfg.cluster.service_account)
    for verb in ("get", "list", "watch", "patch", "create"):
        assert ("serving.kserve.io", "inferenceservices", verb) in allowed
    assert ("serving.kserve.io", "inferenceservices", "delete") not in allowed
