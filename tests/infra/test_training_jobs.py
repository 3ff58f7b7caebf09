"""The TrainJob / PyTorchJob the train step creates from each overlay's config: typed round trips
(kubeflow_trainer_api for TrainJob, kubeflow-training for PyTorchJob) that fail on unknown keys,
and references that resolve in that overlay (service account, credentials Secret by reference)."""
from __future__ import annotations

import copy
import json

import pytest
from kubeflow.training.api_client import ApiClient as TrainingApiClient
from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

from components.train.kubeflow import manifest_for
from tests.infra.test_manifests import OVERLAYS, build, named, trigger_config

JOB_URI = "s3://bucket/runs/r/train/job.json"


class _Response:
    """What kubeflow-training's ApiClient.deserialize reads: an HTTP body."""

    def __init__(self, obj: dict):
        self.data = json.dumps(obj)


def trainjob_roundtrip(manifest: dict) -> dict:
    return TrainerV1alpha1TrainJob.from_dict(manifest).to_dict()


def pytorchjob_roundtrip(manifest: dict) -> dict:
    client = TrainingApiClient()
    return client.sanitize_for_serialization(client.deserialize(_Response(manifest), "KubeflowOrgV1PyTorchJob"))


ROUNDTRIP = {"trainjob": trainjob_roundtrip, "pytorchjob": pytorchjob_roundtrip}


def job(overlay: str, launcher: str) -> tuple[dict, list[dict]]:
    docs = build(overlay)
    cfg = trigger_config(docs)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"launcher": launcher})})
    # Plain JSON types, as the API server would get them.
    return json.loads(json.dumps(manifest_for(cfg, JOB_URI, "mixtune-run-train", "mixtune-run"))), docs


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_job_round_trips_through_its_typed_model(overlay, launcher):
    manifest, _ = job(overlay, launcher)
    assert ROUNDTRIP[launcher](manifest) == manifest


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
def test_round_trip_catches_an_unknown_key(launcher):
    manifest, _ = job("production", launcher)
    bad = copy.deepcopy(manifest)
    bad["spec"]["numNodez" if launcher == "trainjob" else "runPolicyy"] = 2
    assert ROUNDTRIP[launcher](bad) != bad


def pod_specs(manifest: dict) -> list[dict]:
    if manifest["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in manifest["spec"]["pytorchReplicaSpecs"].values()]
    patch = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    return [j["template"]["spec"]["template"]["spec"] for j in patch["replicatedJobs"]]


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_pods_use_the_overlays_service_account_and_namespace(overlay, launcher):
    manifest, docs = job(overlay, launcher)
    assert manifest["metadata"]["namespace"] == named(docs, "Namespace", "mixtune")["metadata"]["name"]
    for spec in pod_specs(manifest):
        named(docs, "ServiceAccount", spec["serviceAccountName"])
    text = json.dumps(manifest)
    cfg = trigger_config(docs)
    if cfg.train.kubernetes.credentials_secret:
        assert f'"name": "{cfg.train.kubernetes.credentials_secret}"' in text  # by reference only
    else:
        assert "secretKeyRef" not in text and "secretRef" not in text
