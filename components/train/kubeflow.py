"""Hand training to Kubeflow on the cluster: a TrainJob (Kubeflow Trainer v2) or a PyTorchJob
(training-operator v1), built from the same config as the local launcher, then wait for it.

Every pod runs `torchrun ... -m components.train.worker --job-uri <s3://.../job.json>`; the job spec
lives in S3, so nothing but its URI goes into the manifest. Credentials never do either: pods get
them from the service account's role, or from `credentials_secret` by reference.

Field names follow the CRDs' Go types: trainer.kubeflow.org/v1alpha1 TrainJob (Trainer v2.2+, which
replaced podTemplateOverrides with runtimePatches; train.kubernetes.trainjob_overrides picks podTemplateOverrides
for v2.0-2.1)
and kubeflow.org/v1 PyTorchJob.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Callable, Literal

from components.common.config import MixtuneConfig

TRAINJOB = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
PYTORCHJOB = ("kubeflow.org", "v1", "pytorchjobs")
PATCH_MANAGER = "mixtune.io/train"  # owner of our entry in the TrainJob's runtimePatches
JOB_URI_ANNOTATION = "mixtune.io/job-uri"
# Keys read from credentials_secret for a TrainJob (its API has no envFrom); absent keys are skipped.
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# Children are named <job>-node-0-0-xxxxx (JobSet) or <job>-worker-N (PyTorchJob) and must stay
# within 63 characters, so the job name itself is kept well below that.
NAME_MAX = 40
SHM = {"name": "dshm", "emptyDir": {"medium": "Memory"}}  # NCCL needs more than the default 64 MB
SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


class KubeflowJobError(RuntimeError):
    """The training job failed, vanished, or could not be created."""


class KubeflowJobTimeout(TimeoutError):
    """The job did not finish in time; it is left running in the cluster."""


# -- names ---------------------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def job_name(name: str) -> str:
    """An RFC 1035 label (what TrainJob's CRD demands, stricter than DNS-1123): lower-case letters,
    digits and '-', starting with a letter. Long names keep a hash of the original, so two runs that
    share a prefix still get different jobs, and the same run always gets the same one."""
    clean = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", name.lower())).strip("-")
    if not clean or not clean[0].isalpha():
        clean = f"mixtune-{clean}".rstrip("-")
    if len(clean) > NAME_MAX:
        clean = f"{clean[:NAME_MAX - 9].rstrip('-')}-{_digest(name)}"
    return clean


def label_value(value: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends (or empty)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", value).strip("-_.")
    if len(clean) > 63:
        clean = f"{clean[:54].rstrip('-_.')}-{_digest(value)}"
    return clean


# -- shared pieces -------------------------------------------------------------------------------


def procs_per_node(cfg: MixtuneConfig) -> int:
    k = cfg.train.kubernetes
    return k.gpus_per_node if k.gpus_per_node > 0 else k.cpu_processes_per_node


def _cores(cpu: str) -> float:
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def _env(cfg: MixtuneConfig) -> list[dict]:
    """Plain settings only; the worker finds S3 through AWS_ENDPOINT_URL before it has read job.json."""
    k = cfg.train.kubernetes
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"},
           {"name": "AWS_DEFAULT_REGION", "value": cfg.storage.region}]
    if cfg.storage.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": cfg.storage.endpoint_url})
    if k.gpus_per_node == 0:
        env.append({"name": "DS_ACCELERATOR", "value": "cpu"})  # DeepSpeed would probe for CUDA
        threads = max(1, int(_cores(k.cpu) // k.cpu_processes_per_node))
        env.append({"name": "OMP_NUM_THREADS", "value": str(threads)})  # torchrun would force 1
    return env


def _resources(cfg: MixtuneConfig) -> dict:
    k = cfg.train.kubernetes
    limits = {"memory": k.memory}
    if k.gpus_per_node > 0:
        limits["nvidia.com/gpu"] = str(k.gpus_per_node)
    # No CPU limit: throttling a data-parallel rank stalls every other rank at the next allreduce.
    return {"requests": {"cpu": k.cpu, "memory": k.memory}, "limits": limits}


def _labels(pipeline_run: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "mixtune", "app.kubernetes.io/component": "train",
            "mixtune.io/pipeline-run": label_value(pipeline_run)}


def _metadata(cfg: MixtuneConfig, name: str, job_uri: str, pipeline_run: str | None) -> dict:
    return {"name": job_name(name), "namespace": cfg.train.kubernetes.namespace,
            "labels": _labels(pipeline_run if pipeline_run is not None else name),
            "annotations": {JOB_URI_ANNOTATION: job_uri}}


def _worker(job_uri: str) -> list[str]:
    return ["-m", "components.train.worker", "--job-uri", job_uri]


# -- manifests -----------------------------------------------------------------------------------


def trainjob_manifest(cfg: MixtuneConfig, job_uri: str, name: str, pipeline_run: str | None = None,
                      overrides: Literal["runtimePatches", "podTemplateOverrides"] = "runtimePatches") -> dict:
    """A Kubeflow Trainer v2 TrainJob on the ClusterTrainingRuntime `train.kubernetes.runtime`.

    The torch runtime sets PET_NNODES / PET_NPROC_PER_NODE / PET_NODE_RANK / PET_MASTER_ADDR /
    PET_MASTER_PORT from numNodes and numProcPerNode; torchrun reads those as its defaults."""
    k = cfg.train.kubernetes
    env = _env(cfg)
    if k.credentials_secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": k.credentials_secret, "key": key,
                                                             "optional": True}}} for key in CREDENTIAL_KEYS]
    metadata = _metadata(cfg, name, job_uri, pipeline_run)
    pod_spec = {"serviceAccountName": k.service_account, "volumes": [SHM],
                "containers": [{"name": "node", "volumeMounts": [SHM_MOUNT]}]}
    pod_meta = {"labels": metadata["labels"]}
    spec: dict = {
        "runtimeRef": {"name": k.runtime, "apiGroup": TRAINJOB[0], "kind": "ClusterTrainingRuntime"},
        "trainer": {"image": cfg.images.gpu, "command": ["torchrun"], "args": _worker(job_uri),
                    "numNodes": k.num_nodes, "numProcPerNode": procs_per_node(cfg),
                    "resourcesPerNode": _resources(cfg), "env": env},
    }
    if overrides == "runtimePatches":
        spec["activeDeadlineSeconds"] = int(k.timeout_seconds)  # the cluster stops what we stop waiting for
        pod_template = {"metadata": pod_meta, "spec": pod_spec}
        spec["runtimePatches"] = [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
            "replicatedJobs": [{"name": "node", "template": {"spec": {"template": pod_template}}}]}}}}]
    elif overrides == "podTemplateOverrides":
        spec["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}], "metadata": pod_meta, "spec": pod_spec}]
    else:
        raise ValueError(f"overrides must be runtimePatches or podTemplateOverrides, not {overrides!r}")
    return {"apiVersion": f"{TRAINJOB[0]}/{TRAINJOB[1]}", "kind": "TrainJob", "metadata": metadata, "spec": spec}


def pytorchjob_manifest(cfg: MixtuneConfig, job_uri: str, name: str, pipeline_run: str | None = None) -> dict:
    """A training-operator v1 PyTorchJob: one Master plus num_nodes - 1 Workers.

    The operator sets MASTER_ADDR / MASTER_PORT and RANK (the pod's node index) in each container;
    Kubernetes expands $(VAR) in args from them, so torchrun gets the rendezvous explicitly."""
    k = cfg.train.kubernetes
    nproc = procs_per_node(cfg)
    container = {
        "name": "pytorch",  # the operator looks for this container name
        "image": cfg.images.gpu,
        "command": ["torchrun"],
        "args": ["--nnodes", str(k.num_nodes), "--nproc-per-node", str(nproc), "--node-rank", "$(RANK)",
                 "--master-addr", "$(MASTER_ADDR)", "--master-port", "$(MASTER_PORT)", *_worker(job_uri)],
        "env": _env(cfg),
        "resources": _resources(cfg),
        "volumeMounts": [SHM_MOUNT],
    }
    if k.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": k.credentials_secret}}]
    metadata = _metadata(cfg, name, job_uri, pipeline_run)
    template = {"metadata": {"labels": metadata["labels"]},
                "spec": {"serviceAccountName": k.service_account, "containers": [container], "volumes": [SHM]}}
    # Never restart a pod in place: a lone restarted rank cannot rejoin the others' rendezvous;
    # a rerun of the step resumes from the latest checkpoint instead.
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if k.num_nodes > 1:
        replicas["Worker"] = {"replicas": k.num_nodes - 1, "restartPolicy": "Never", "template": template}
    return {"apiVersion": f"{PYTORCHJOB[0]}/{PYTORCHJOB[1]}", "kind": "PyTorchJob", "metadata": metadata,
            "spec": {"nprocPerNode": str(nproc), "pytorchReplicaSpecs": replicas,
                     "runPolicy": {"cleanPodPolicy": "None", "activeDeadlineSeconds": int(k.timeout_seconds)}}}


def manifest_for(cfg: MixtuneConfig, job_uri: str, name: str, pipeline_run: str | None = None) -> dict:
    """The manifest train.launcher asks for."""
    if cfg.train.launcher == "trainjob":
        return trainjob_manifest(cfg, job_uri, name, pipeline_run, cfg.train.kubernetes.trainjob_overrides)
    if cfg.train.launcher == "pytorchjob":
        return pytorchjob_manifest(cfg, job_uri, name, pipeline_run)
    raise ValueError(f"train.launcher={cfg.train.launcher!r} does not run on Kubeflow")


# -- submit and wait -----------------------------------------------------------------------------

# kind -> (condition types that end the job well, ... badly)
TERMINAL = {"TrainJob": ({"Complete"}, {"Failed"}), "PyTorchJob": ({"Succeeded"}, {"Failed"})}
TRANSIENT_ERRORS_ALLOWED = 10  # consecutive failed polls (API server restarts) before giving up


def default_api():
    """CustomObjectsApi from the pod's service account, else from ~/.kube/config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def _status_code(error: Exception) -> int | None:
    return getattr(error, "status", None)


def _describe(error: Exception) -> str:
    """One line for an ApiException (its str() spans headers and body): status, reason, server message."""
    if _status_code(error) is None:
        return str(error)
    text = f"HTTP {error.status} {getattr(error, 'reason', '')}".rstrip()
    try:
        message = json.loads(getattr(error, "body", None) or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{text}: {message}" if message else text


def job_state(obj: dict) -> tuple[str | None, dict | None]:
    """('succeeded' | 'failed' | None, the deciding condition) from the job's status.conditions."""
    good, bad = TERMINAL[obj["kind"]]
    for condition in reversed((obj.get("status") or {}).get("conditions") or []):
        if str(condition.get("status")) != "True":
            continue
        if condition.get("type") in bad:
            return "failed", condition
        if condition.get("type") in good:
            return "succeeded", condition
    return None, None


def submit_and_wait(manifest: dict, api=None, poll_seconds: float = 30.0, timeout_seconds: float = 7 * 24 * 3600,
                    *, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                    log: Callable[[str], None] = print) -> dict:
    """Create the job (or adopt one of the same name made for the same job.json: a retried step must
    not start a second training) and poll it until it succeeds; return its final status."""
    group, version, plural = TRAINJOB if manifest["kind"] == "TrainJob" else PYTORCHJOB
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    what = f"{manifest['kind']} {namespace}/{name}"
    api = api if api is not None else default_api()
    adopted = False
    try:
        api.create_namespaced_custom_object(group, version, namespace, plural, manifest)
        log(f"created {what}")
    except Exception as error:  # kubernetes.client.ApiException, or a fake's
        if _status_code(error) != 409:
            raise KubeflowJobError(f"could not create {what}: {_describe(error)}") from error
        try:
            existing = api.get_namespaced_custom_object(group, version, namespace, plural, name)
        except Exception as read_error:
            raise KubeflowJobError(f"{what} exists but cannot be read: {_describe(read_error)}") from read_error
        theirs = existing.get("metadata", {}).get("annotations", {}).get(JOB_URI_ANNOTATION)
        ours = manifest["metadata"]["annotations"][JOB_URI_ANNOTATION]
        if theirs != ours:
            raise KubeflowJobError(f"{what} already exists for another job ({theirs or 'no job URI'}, not {ours}); "
                                   f"delete it or choose another name") from None
        log(f"{what} already exists for this job: waiting for it instead of starting another")
        adopted = True

    deadline, errors, last = clock() + timeout_seconds, 0, None
    while True:
        try:
            obj = api.get_namespaced_custom_object(group, version, namespace, plural, name)
            errors = 0
        except Exception as error:
            if _status_code(error) == 404:
                raise KubeflowJobError(f"{what} disappeared while training (deleted?)") from error
            errors += 1
            if errors > TRANSIENT_ERRORS_ALLOWED:
                raise KubeflowJobError(f"cannot read {what}: {_describe(error)}") from error
            obj = None
        if obj is not None:
            state, condition = job_state({"kind": manifest["kind"], **obj})
            status = obj.get("status") or {}
            latest = (status.get("conditions") or [{}])[-1]
            if latest.get("type") != last:
                last = latest.get("type")
                log(f"{what}: {last} {latest.get('message', '')}".rstrip())
            if state == "succeeded":
                return status
            if state == "failed":
                hint = " (it existed before this step started: delete it to train again)" if adopted else ""
                raise KubeflowJobError(f"{what} failed ({condition.get('reason') or 'no reason'}): "
                                       f"{condition.get('message') or 'no message'}{hint}")
        if clock() >= deadline:
            raise KubeflowJobTimeout(f"{what} did not finish within {timeout_seconds:g} s (last condition: "
                                     f"{last or 'none'}); it is still in the cluster")
        sleep(poll_seconds)
