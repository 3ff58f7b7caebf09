"""A fake KServe for the deploy tests: the three CustomObjectsApi calls on one InferenceService, with
statuses a test scripts the way the controller would report them, and a fake model server."""
from __future__ import annotations

import copy
import json

from kubernetes.client.exceptions import ApiException

from components.deploy import manifest as m
from tests.infra.crd_schema import merge_patch

NAME = "mixtune-summarizer"
LOCAL = "http://mixtune-summarizer-predictor.mixtune.svc.cluster.local"


class FakeKServe:
    """get/patch/create on one InferenceService. Each read reports the next scripted status (a function of
    the object as written, like a controller; the last one repeats, an exception is raised)."""

    def __init__(self, statuses, existing: dict | None = None, patch_error: Exception | None = None):
        self.statuses, self.obj, self.patch_error = list(statuses), copy.deepcopy(existing), patch_error
        if self.obj is not None:
            self.obj["metadata"]["generation"] = 1
        self.patches, self.created, self.gets = [], [], 0

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, namespace, plural, name) == ("serving.kserve.io", "v1beta1", "mixtune",
                                                             "inferenceservices", NAME)
        self.gets += 1
        if self.obj is None:
            raise ApiException(status=404, reason="NotFound")
        step = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(step, Exception):
            raise step
        return {**copy.deepcopy(self.obj), "status": step(self.obj)}

    def _write(self, obj: dict) -> dict:
        obj.setdefault("metadata", {})["generation"] = (obj["metadata"].get("generation") or 0) + 1
        self.obj = obj
        return copy.deepcopy(obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        if self.patch_error is not None:
            raise self.patch_error
        self.patches.append(copy.deepcopy(body))
        return self._write(merge_patch(self.obj, body))

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append(copy.deepcopy(body))
        return self._write(copy.deepcopy(body))


def cond(kind: str, status: str = "True", reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def knative(revision: str, ready: bool = True, stale: bool = False, created: str | None = None, failing=()):
    """What KServe reports in serverless mode: `revision` ready (or still `created`), the canary split
    from the object's canaryTrafficPercent, tagged routes."""
    def status(obj):
        canary = obj["spec"]["predictor"].get("canaryTrafficPercent")
        percent = 100 if canary is None else canary
        traffic = [{"tag": "latest", "revisionName": revision, "latestRevision": True, "percent": percent,
                    "url": f"http://latest-{NAME}-predictor.mixtune.example.com"}]
        if percent < 100:
            traffic.append({"tag": "prev", "revisionName": f"{NAME}-predictor-00001", "latestRevision": False,
                            "percent": 100 - percent})
        generation = obj["metadata"]["generation"]
        return {"observedGeneration": generation - 1 if stale else generation,
                "conditions": [cond("PredictorReady", *(("True",) if ready else failing)),
                               cond("Ready", *(("True",) if ready else failing))],
                "url": f"http://{NAME}.mixtune.example.com", "address": {"url": f"{LOCAL}"},
                "components": {"predictor": {"latestCreatedRevision": created or revision,
                                             "latestReadyRevision": revision, "traffic": traffic,
                                             "address": {"url": LOCAL}}}}
    return status


def deployment_ready(obj):
    """Standard mode: Ready while the Deployment is available (old pods count during a rolling update)."""
    return {"observedGeneration": obj["metadata"]["generation"], "conditions": [cond("Ready")],
            "url": f"http://{NAME}.mixtune.example.com", "address": {"url": LOCAL}}


class FakeServer:
    """POST /invocations; answers as the versions scripted (default: the one the object is set to)."""

    def __init__(self, api: FakeKServe, versions=(), status: int = 200):
        self.api, self.versions, self.status, self.calls = api, list(versions), status, []

    def __call__(self, url, payload, timeout):
        self.calls.append((url, payload))
        version = self.versions.pop(0) if self.versions else m.served_version(self.api.obj)
        body = {"predictions": ["The customer got a replacement."]} if self.status == 200 else {"error": "boom"}
        return self.status, {"x-mixtune-model-version": version}, json.dumps(body).encode()
