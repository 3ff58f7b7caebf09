"""Kubeflow launch: manifests built from the config, and the submit-and-wait loop against a fake API server."""
from __future__ import annotations

import copy
import json
import re

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from components.common.config import parse_config
from components.train import kubeflow as kf

JOB_URI = "s3://mixtune/runs/run-7/train/job.json"
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def config(**kubernetes):
    k = {"namespace": "ml", "num_nodes": 3, "gpus_per_node": 4, "cpu": "16", "memory": "120Gi",
         "runtime": "torch-distributed", "service_account": "trainer-sa", **kubernetes}
    return parse_config({"train": {"launcher": "trainjob", "kubernetes": k},
                         "images": {"gpu": "registry.example/mixtune/train-cuda:1.2"},
                         "storage": {"endpoint_url": "http://minio.ml:9000", "region": "eu-west-1"}})


def env_of(container_or_trainer: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container_or_trainer["env"]}


def pod_patch(manifest: dict) -> dict:
    """The pod template our runtime patch applies to the runtime's `node` job."""
    (patch,) = manifest["spec"]["runtimePatches"]
    assert patch["manager"] == kf.PATCH_MANAGER
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node"
    return rjob["template"]["spec"]["template"]


def as_core_type(data, klass: str):
    """Deserialize through the kubernetes client's typed models and back: unknown or misplaced keys
    are dropped on the way, and a required field that is missing raises."""
    client = ApiClient()

    class Response:
        def __init__(self, payload):
            self.data = json.dumps(payload)

    return client.sanitize_for_serialization(client.deserialize(Response(data), klass))


# -- TrainJob ------------------------------------------------------------------------------------


def test_trainjob_from_config():
    m = kf.trainjob_manifest(config(), JOB_URI, "run-7-train", pipeline_run="run-7")
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["metadata"]["name"] == "run-7-train" and m["metadata"]["namespace"] == "ml"
    assert m["metadata"]["labels"] == {"app.kubernetes.io/part-of": "mixtune", "app.kubernetes.io/component": "train",
                                       "mixtune.io/pipeline-run": "run-7"}
    assert m["metadata"]["annotations"][kf.JOB_URI_ANNOTATION] == JOB_URI
    spec = m["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    trainer = spec["trainer"]
    assert trainer["image"] == "registry.example/mixtune/train-cuda:1.2"
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"] == ["-m", "components.train.worker", "--job-uri", JOB_URI]
    assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "16", "memory": "120Gi"},
                                           "limits": {"memory": "120Gi", "nvidia.com/gpu": "4"}}
    env = env_of(trainer)
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.ml:9000"
    assert env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    assert "DS_ACCELERATOR" not in env
    assert not any(name.startswith("PET_") for name in env)  # reserved: the torch runtime sets them
    pod = pod_patch(m)
    assert pod["metadata"]["labels"] == m["metadata"]["labels"]
    assert pod["spec"]["serviceAccountName"] == "trainer-sa"
    assert pod["spec"]["containers"] == [{"name": "node", "volumeMounts": [kf.SHM_MOUNT]}]
    assert spec["activeDeadlineSeconds"] == int(config().train.kubernetes.timeout_seconds)
    # The parts that are core Kubernetes types survive a typed round trip unchanged.
    assert as_core_type(trainer["env"], "list[V1EnvVar]") == trainer["env"]
    assert as_core_type(trainer["resourcesPerNode"], "V1ResourceRequirements") == trainer["resourcesPerNode"]
    assert as_core_type(pod, "V1PodTemplateSpec") == pod


def test_trainjob_on_cpu_nodes():
    m = kf.trainjob_manifest(config(gpus_per_node=0, cpu_processes_per_node=3, cpu="12"), JOB_URI, "cpu-run")
    trainer = m["spec"]["trainer"]
    assert trainer["numProcPerNode"] == 3
    assert "nvidia.com/gpu" not in trainer["resourcesPerNode"]["limits"]
    env = env_of(trainer)
    assert env["DS_ACCELERATOR"]["value"] == "cpu"
    assert env["OMP_NUM_THREADS"]["value"] == "4"  # 12 cores / 3 processes
    assert m["metadata"]["labels"]["mixtune.io/pipeline-run"] == "cpu-run"  # defaults to the name


def test_trainjob_credentials_only_by_reference():
    m = kf.trainjob_manifest(config(credentials_secret="mixtune-s3"), JOB_URI, "run")
    env = env_of(m["spec"]["trainer"])
    for key in kf.CREDENTIAL_KEYS:
        assert "value" not in env[key]
        assert env[key]["valueFrom"] == {"secretKeyRef": {"name": "mixtune-s3", "key": key, "optional": True}}
    assert as_core_type(m["spec"]["trainer"]["env"], "list[V1EnvVar]") == m["spec"]["trainer"]["env"]
    no_secret = kf.trainjob_manifest(config(), JOB_URI, "run")
    assert not set(kf.CREDENTIAL_KEYS) & set(env_of(no_secret["spec"]["trainer"]))


def test_trainjob_for_trainer_2_1_uses_pod_template_overrides():
    m = kf.trainjob_manifest(config(), JOB_URI, "run", overrides="podTemplateOverrides")
    assert "runtimePatches" not in m["spec"] and "activeDeadlineSeconds" not in m["spec"]
    (override,) = m["spec"]["podTemplateOverrides"]
    assert override["targetJobs"] == [{"name": "node"}]
    assert override["spec"]["serviceAccountName"] == "trainer-sa"
    assert override["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mixtune"
    with pytest.raises(ValueError, match="overrides"):
        kf.trainjob_manifest(config(), JOB_URI, "run", overrides="podSpecOverrides")
    # The config knob reaches the manifest the train step submits.
    assert kf.manifest_for(config(trainjob_overrides="podTemplateOverrides"), JOB_URI, "run") == m
    assert "runtimePatches" in kf.manifest_for(config(), JOB_URI, "run")["spec"]


# -- PyTorchJob ----------------------------------------------------------------------------------


def test_pytorchjob_from_config():
    m = kf.pytorchjob_manifest(config(credentials_secret="mixtune-s3"), JOB_URI, "Run 7 / Train", pipeline_run="run-7")
    assert m["apiVersion"] == "kubeflow.org/v1" and m["kind"] == "PyTorchJob"
    assert m["metadata"]["name"] == "run-7-train"
    spec = m["spec"]
    assert spec["nprocPerNode"] == "4"  # a string in the CRD (auto, cpu, gpu or a number)
    replicas = spec["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    for replica in replicas.values():
        assert replica["restartPolicy"] == "Never"
        template = replica["template"]
        assert template["metadata"]["labels"]["mixtune.io/pipeline-run"] == "run-7"
        assert template["spec"]["serviceAccountName"] == "trainer-sa"
        (container,) = template["spec"]["containers"]
        assert container["name"] == "pytorch" and container["image"] == "registry.example/mixtune/train-cuda:1.2"
        assert container["command"] == ["torchrun"]
        assert container["args"] == ["--nnodes", "3", "--nproc-per-node", "4", "--node-rank", "$(RANK)",
                                     "--master-addr", "$(MASTER_ADDR)", "--master-port", "$(MASTER_PORT)",
                                     "-m", "components.train.worker", "--job-uri", JOB_URI]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        assert container["envFrom"] == [{"secretRef": {"name": "mixtune-s3"}}]
        assert as_core_type(template, "V1PodTemplateSpec") == template
    assert spec["runPolicy"]["activeDeadlineSeconds"] == int(config().train.kubernetes.timeout_seconds)


def test_pytorchjob_single_cpu_node():
    m = kf.pytorchjob_manifest(config(num_nodes=1, gpus_per_node=0, cpu_processes_per_node=2), JOB_URI, "one")
    replicas = m["spec"]["pytorchReplicaSpecs"]
    assert list(replicas) == ["Master"] and m["spec"]["nprocPerNode"] == "2"
    (container,) = replicas["Master"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"] and "envFrom" not in container
    assert container["args"][:4] == ["--nnodes", "1", "--nproc-per-node", "2"]


def test_launcher_picks_the_manifest():
    cfg = config()
    assert kf.manifest_for(cfg, JOB_URI, "r")["kind"] == "TrainJob"
    cfg.train.launcher = "pytorchjob"
    assert kf.manifest_for(cfg, JOB_URI, "r")["kind"] == "PyTorchJob"
    cfg.train.launcher = "local"
    with pytest.raises(ValueError, match="local"):
        kf.manifest_for(cfg, JOB_URI, "r")


def test_no_secret_value_reaches_a_manifest(monkeypatch):
    secrets = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY",
               "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE12345", "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLETOKEN",
               "MLFLOW_TRACKING_PASSWORD": "mlflow-pa55word"}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    for secret in (None, "mixtune-s3"):
        cfg = config(credentials_secret=secret)
        for manifest in (kf.trainjob_manifest(cfg, JOB_URI, "run"), kf.pytorchjob_manifest(cfg, JOB_URI, "run"),
                         kf.trainjob_manifest(cfg, JOB_URI, "run", overrides="podTemplateOverrides")):
            text = json.dumps(manifest)
            assert not [key for key, value in secrets.items() if value in text]
            for entry in re.findall(r'\{"name": "([A-Z_]+)", "value"', text):
                assert entry not in kf.CREDENTIAL_KEYS


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["run-7-train", "Mixtune Run_2026/11/22 12:00", "123-starts-with-digit", "", "---",
                                 "kfp-" + "x" * 80, "UPPER.case.dots", "ünïcödé-rün"])
def test_job_names_are_rfc1035_labels(raw):
    name = kf.job_name(raw)
    assert RFC1035.match(name), name
    assert len(name) <= kf.NAME_MAX
    assert kf.job_name(raw) == name  # deterministic: a retried step finds its own job


def test_long_names_keep_a_hash_so_they_stay_distinct():
    a = kf.job_name("pipeline-run-" + "a" * 60 + "-one")
    b = kf.job_name("pipeline-run-" + "a" * 60 + "-two")
    assert a != b and a.startswith("pipeline-run-aaa") and len(a) == kf.NAME_MAX
    assert kf.job_name("Run_7") == "run-7" and kf.job_name("7") == "mixtune-7"
    assert kf.trainjob_manifest(config(), JOB_URI, "Run_7")["metadata"]["name"] == "run-7"


def test_label_values():
    assert kf.label_value("run 7/ok") == "run-7-ok"
    long = kf.label_value("r" * 100)
    assert len(long) <= 63 and re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", long)


# -- submit and wait -----------------------------------------------------------------------------


class FakeApi:
    """The two CustomObjectsApi calls, with a script of statuses the 'controller' reports."""

    def __init__(self, statuses, existing=None, create_error=None):
        self.statuses = list(statuses)
        self.existing = existing
        self.create_error = create_error
        self.created, self.gets = [], 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        if self.create_error is not None:
            raise self.create_error
        if self.existing is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        self.created.append((group, version, namespace, plural, copy.deepcopy(body)))
        self.existing = copy.deepcopy(body)
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.gets += 1
        assert name == self.existing["metadata"]["name"] and namespace == self.existing["metadata"]["namespace"]
        step = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(step, Exception):
            raise step
        return {**self.existing, "status": step}


def cond(kind: str, message: str = "", reason: str = "") -> dict:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


class Clock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def wait(manifest, api, timeout=3600.0):
    clock = Clock()
    result = kf.submit_and_wait(manifest, api=api, poll_seconds=30, timeout_seconds=timeout,
                                sleep=clock.sleep, clock=clock, log=lambda line: None)
    return result, clock


def trainjob():
    return kf.trainjob_manifest(config(), JOB_URI, "run-7-train")


def test_trainjob_success():
    api = FakeApi([{}, {"conditions": [cond("Created")]},
                   {"conditions": [cond("Created"), cond("Complete", "TrainJob completed")]}])
    status, clock = wait(trainjob(), api)
    assert status["conditions"][-1]["type"] == "Complete"
    (created,) = api.created
    assert created[:4] == ("trainer.kubeflow.org", "v1alpha1", "ml", "trainjobs") and created[4] == trainjob()
    assert api.gets == 3 and clock.sleeps == [30, 30]


def test_pytorchjob_success_and_failure():
    job = kf.pytorchjob_manifest(config(), JOB_URI, "run-7-train")
    api = FakeApi([{"conditions": [cond("Created"), cond("Running")]},
                   {"conditions": [cond("Created"), {**cond("Running"), "status": "False"}, cond("Succeeded")]}])
    status, _ = wait(job, api)
    assert api.created[0][:4] == ("kubeflow.org", "v1", "ml", "pytorchjobs")
    assert status["conditions"][-1]["type"] == "Succeeded"

    failed = cond("Failed", "pod run-7-train-worker-1 OOMKilled", "PyTorchJobFailed")
    api = FakeApi([{"conditions": [cond("Running"), failed]}])
    with pytest.raises(kf.KubeflowJobError,
                       match=r"PyTorchJob ml/run-7-train failed \(PyTorchJobFailed\): .*OOMKilled"):
        wait(job, api)


def test_trainjob_failure_surfaces_the_condition_message():
    api = FakeApi([{"conditions": [cond("Created")]},
                   {"conditions": [cond("Failed", "jobset node failed: exit code 3", "JobSetFailed")]}])
    with pytest.raises(kf.KubeflowJobError) as err:
        wait(trainjob(), api)
    assert "TrainJob ml/run-7-train" in str(err.value) and "exit code 3" in str(err.value)


def test_timeout_names_the_job_and_leaves_it_running():
    api = FakeApi([{"conditions": [cond("Created")]}])
    with pytest.raises(kf.KubeflowJobTimeout, match=r"TrainJob ml/run-7-train did not finish within 300 s .*Created"):
        wait(trainjob(), api, timeout=300)
    assert api.gets == 11  # polled at 0, 30, ..., 300 s


def test_existing_job_for_the_same_spec_is_adopted_not_recreated():
    api = FakeApi([{"conditions": [cond("Created")]}, {"conditions": [cond("Complete")]}], existing=trainjob())
    status, _ = wait(trainjob(), api)
    assert api.created == [] and status["conditions"][-1]["type"] == "Complete"
    # A retried step that finds its job already failed reports that failure, and how to start over.
    api = FakeApi([{"conditions": [cond("Failed", "exit code 1")]}], existing=trainjob())
    with pytest.raises(kf.KubeflowJobError, match="exit code 1 .*delete it to train again"):
        wait(trainjob(), api)
    assert api.created == []


def test_existing_job_for_another_spec_is_an_error():
    other = kf.trainjob_manifest(config(), "s3://mixtune/runs/run-6/train/job.json", "run-7-train")
    api = FakeApi([{}], existing=other)
    with pytest.raises(kf.KubeflowJobError, match="already exists for another job .*run-6"):
        wait(trainjob(), api)
    assert api.created == []


def test_create_errors_and_vanished_jobs_are_clear():
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps({"message": 'trainjobs.trainer.kubeflow.org is forbidden: User "sa" cannot create'})
    api = FakeApi([{}], create_error=forbidden)
    with pytest.raises(kf.KubeflowJobError,
                       match=r"could not create TrainJob ml/run-7-train: HTTP 403 Forbidden: .*cannot create$"):
        wait(trainjob(), api)
    api = FakeApi([{"conditions": [cond("Created")]}, ApiException(status=404, reason="NotFound")])
    with pytest.raises(kf.KubeflowJobError, match="disappeared"):
        wait(trainjob(), api)


def test_transient_api_errors_are_retried():
    flaky = [ApiException(status=503, reason="Unavailable")] * 3
    api = FakeApi([{}, *flaky, {"conditions": [cond("Complete")]}])
    status, _ = wait(trainjob(), api)
    assert status["conditions"][-1]["type"] == "Complete"
    api = FakeApi([ApiException(status=500, reason="boom")])
    with pytest.raises(kf.KubeflowJobError, match="cannot read TrainJob"):
        wait(trainjob(), api)
