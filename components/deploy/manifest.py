"""The champion's KServe InferenceService (serving.kserve.io/v1beta1, KServe v0.20) as the deploy step
writes it, and what its status says.

The predictor is a custom container: the serving code of the step image (`python -m components.serve`).
KServe reads a custom container's model from its `STORAGE_URI` env, and only on the container named
`kserve-container`: the storage initializer (an init container) downloads that prefix into /mnt/models
and the env is rewritten to /mnt/models. The prefix is the version's own immutable one, never an alias,
so a revision always serves the version it was made for. Field names follow the CRD's schema
(tests/infra checks them against ../shared/crds/kserve-v0.20.0).
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from components.common.config import MixtuneConfig

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
CONTAINER = "kserve-container"
MODEL_DIR = "/mnt/models"
PORT = 8080
MODE = {"serverless": "Knative", "standard": "Standard"}  # KServe 0.17+ names (Serverless/RawDeployment before)
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# Serverless: the new revision's route is tagged `latest`, so the smoke request reaches it and nothing else.
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
VERSION_ANNOTATION = "mixtune.io/model-version"
URI_ANNOTATION = "mixtune.io/model-uri"
VERSION_ENV = "MIXTUNE_MODEL_VERSION"


@dataclass(frozen=True)
class Target:
    """What to serve: a registered version and its immutable S3 prefix."""

    name: str
    version: str
    model_uri: str


def _container(cfg: MixtuneConfig, target: Target) -> dict:
    k = cfg.serve.kubernetes
    resources = {"requests": {"cpu": k.cpu, "memory": k.memory}, "limits": {"memory": k.memory}}
    if k.gpus:
        resources["limits"]["nvidia.com/gpu"] = str(k.gpus)
    probe = {"httpGet": {"path": "/ready", "port": PORT}, "periodSeconds": 5, "failureThreshold": 3}
    return {
        "name": CONTAINER,
        "image": cfg.images.gpu if k.gpus else cfg.images.cpu,
        "command": ["python", "-m", "components.serve", "--model-uri", MODEL_DIR, "--host", "0.0.0.0",
                    "--port", str(PORT)],
        "env": [{"name": "STORAGE_URI", "value": target.model_uri},
                {"name": "MIXTUNE_MODEL_NAME", "value": target.name},
                {"name": VERSION_ENV, "value": target.version}],
        "ports": [{"name": "http1", "containerPort": PORT, "protocol": "TCP"}],  # Knative's name for HTTP/1
        "readinessProbe": probe,
        # Generous: loading a model is slow, and a restart would only load it again.
        "livenessProbe": {"httpGet": {"path": "/health", "port": PORT}, "initialDelaySeconds": 60,
                          "periodSeconds": 20, "failureThreshold": 3},
        "resources": resources,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }


def predictor(cfg: MixtuneConfig, target: Target, canary_percent: int | None = None) -> dict:
    """spec.predictor: the serving container plus the rollout settings of the configured mode."""
    k = cfg.serve.kubernetes
    spec = {"serviceAccountName": k.service_account, "minReplicas": k.min_replicas,
            "maxReplicas": k.max_replicas, "containers": [_container(cfg, target)]}
    if k.mode == "standard":
        # A Deployment: new pods first, old ones go only when the new ones are Ready.
        spec["deploymentStrategy"] = {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    elif canary_percent is not None:
        spec["canaryTrafficPercent"] = canary_percent
    return spec


def annotations(cfg: MixtuneConfig, target: Target) -> dict[str, str]:
    notes = {MODE_ANNOTATION: MODE[cfg.serve.kubernetes.mode], VERSION_ANNOTATION: target.version,
             URI_ANNOTATION: target.model_uri}
    if cfg.serve.kubernetes.mode == "serverless":
        notes[TAG_ROUTING_ANNOTATION] = "true"
    return notes


def inference_service(cfg: MixtuneConfig, target: Target, canary_percent: int | None = None) -> dict:
    """The whole object, for creating it (and what infra/base/serving/inferenceservice.yaml holds)."""
    k = cfg.serve.kubernetes
    return {"apiVersion": f"{GROUP}/{API_VERSION}", "kind": "InferenceService",
            "metadata": {"name": k.name, "namespace": k.namespace, "annotations": annotations(cfg, target),
                         "labels": {"app.kubernetes.io/part-of": "mixtune", "app.kubernetes.io/component": "serve"}},
            "spec": {"predictor": predictor(cfg, target, canary_percent)}}


def version_patch(cfg: MixtuneConfig, target: Target, canary_percent: int | None) -> dict:
    """A JSON merge patch that moves the object to `target`: the container list is replaced whole, other
    predictor fields (set by an overlay, say) stay. canary_percent None removes canaryTrafficPercent."""
    spec = predictor(cfg, target, canary_percent)
    if cfg.serve.kubernetes.mode == "serverless":
        spec["canaryTrafficPercent"] = canary_percent
    return {"metadata": {"annotations": annotations(cfg, target)}, "spec": {"predictor": spec}}


def full_traffic_patch() -> dict:
    """Serverless: the new revision takes all traffic (KServe routes 100% to the latest ready revision)."""
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


# -- reading the status ---------------------------------------------------------------------------


def served_version(obj: dict) -> str | None:
    """The version the object is set to serve (its container env), whatever its state."""
    for container in (obj.get("spec") or {}).get("predictor", {}).get("containers") or []:
        if container.get("name") == CONTAINER:
            for env in container.get("env") or []:
                if env.get("name") == VERSION_ENV:
                    return env.get("value")
    return None


def _predictor_status(obj: dict) -> dict:
    return ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}


def failing_conditions(obj: dict) -> str:
    """Every condition that is not True, with its reason and message, and KServe's last model failure."""
    status = obj.get("status") or {}
    parts = [f"{c.get('type')}={c.get('status')} ({c.get('reason') or 'no reason'}: {c.get('message') or 'no message'})"
             for c in status.get("conditions") or [] if str(c.get("status")) != "True"]
    failure = (status.get("modelStatus") or {}).get("lastFailureInfo") or {}
    if failure:
        parts.append(f"last model failure {failure.get('reason')}: {failure.get('message')}")
    return "; ".join(parts) or "no failing condition reported"


def not_ready(obj: dict, generation: int, mode: str) -> str | None:
    """Why the object does not serve its spec yet (None: it does)."""
    status = obj.get("status") or {}
    observed = status.get("observedGeneration") or 0
    if observed < generation:
        return f"the KServe controller has not reconciled generation {generation} yet (observed {observed})"
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or str(ready.get("status")) != "True":
        return f"not Ready: {failing_conditions(obj)}"
    if mode == "serverless":
        comp = _predictor_status(obj)
        created, latest = comp.get("latestCreatedRevision"), comp.get("latestReadyRevision")
        if created != latest:
            return f"revision {created} is not ready (latest ready: {latest}): {failing_conditions(obj)}"
        if not any(t.get("tag") == "latest" and t.get("revisionName") == latest for t in comp.get("traffic") or []):
            return f"no route tagged latest leads to revision {latest} yet"
    return None


def latest_revision(obj: dict) -> str:
    return _predictor_status(obj).get("latestReadyRevision") or ""


def takes_all_traffic(obj: dict, revision: str) -> bool:
    return any(t.get("revisionName") == revision and t.get("percent") == 100
               for t in _predictor_status(obj).get("traffic") or [])


def smoke_url(obj: dict, mode: str, address: str) -> str:
    """Where a request reaches the new version alone (serverless: its `latest` tag) or the service."""
    status, comp = obj.get("status") or {}, _predictor_status(obj)
    if mode == "standard":
        local = (status.get("address") or {}).get("url")
        return (local if address == "cluster-local" and local else status.get("url") or local or "").rstrip("/")
    tagged = next((t.get("url") for t in comp.get("traffic") or [] if t.get("tag") == "latest"), None)
    local = (comp.get("address") or {}).get("url")
    if address == "cluster-local" and local:
        # Knative makes a Service `<tag>-<route>` per tag: the tagged route has a cluster-local name too.
        parts = urlsplit(local)
        return f"{parts.scheme}://latest-{parts.netloc}"
    return (tagged or "").rstrip("/")
