"""The CPU image (docker/cpu.Dockerfile, built by the harness) runs a real step against the local S3
server: generated chat logs in S3 -> `python -m components.ingest` in a container as uid 1000 ->
the dataset version, report and MLflow run checked from the host."""
from __future__ import annotations

import hashlib
import io
import json

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from components.common.config import parse_config
from components.common.storage import S3Uri, Store, join
from components.ingest.core import write_dataset
from pipelines.local import stage_sample

pytestmark = pytest.mark.slow

BUCKET = "mixtune-docker"
CONVERSATIONS, BROKEN = 120, 8


def docker_run(engine, image: str, *cmd: str, env_names: tuple[str, ...] = (), volumes: tuple[str, ...] = (),
               user: str | None = None, network_host: bool = False, timeout: float = 600):
    args = ["run", "--rm"]
    if network_host:
        args.append("--network=host")
    if user is not None:
        args += ["--user", user]
    for name in env_names:  # values come from this process's environment, never the command line
        args += ["--env", name]
    for volume in volumes:
        args += ["--volume", volume]
    return engine.run(*args, image, *cmd, check=False, timeout=timeout)


def json_tail(stdout: str):
    """The JSON document a CLI printed last (libraries may print lines before it)."""
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 if start >= 0 else 0:])


def test_image_is_non_root_with_the_cli_and_cpu_torch(docker_engine, cpu_image):
    assert docker_engine.run("image", "inspect", "-f", "{{.Config.User}}", cpu_image).stdout.strip() == "1000:1000"
    probe = ("import json, os, shutil, sys, torch, kfp.dsl.executor_main; "
             "[os.makedirs(os.environ[k], exist_ok=True) for k in ('HF_HOME', 'MPLCONFIGDIR')]; "
             "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'home': os.path.expanduser('~'), "
             "'torch': torch.__version__, 'cuda': torch.version.cuda, 'mixtune': shutil.which('mixtune'), "
             "'python': sys.version_info[:2]}))")
    proc = docker_run(docker_engine, cpu_image, "python", "-c", probe)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout)
    assert info["uid"] == 1000 and info["gid"] == 1000 and info["home"] == "/home/mixtune"
    assert info["torch"] == "2.13.0+cpu" and info["cuda"] is None  # the CPU build, not replaced by pip
    assert info["mixtune"] == "/opt/venv/bin/mixtune" and info["python"] == [3, 11]
    help_ = docker_run(docker_engine, cpu_image, "mixtune", "--help")
    assert help_.returncode == 0 and "usage" in help_.stdout.lower(), help_.stderr[-3000:]


def test_ca_build_secret_is_not_in_the_image(docker_engine, cpu_image, base_image, host_ca_bundle):
    """The build saw the host's CA bundle as a secret; no certificate that only the host trusts (an
    intercepting proxy's) may have landed in a layer."""
    bundle = host_ca_bundle
    if bundle is None:
        pytest.skip("no host CA bundle: the build ran without the secret")
    base = docker_run(docker_engine, base_image, "cat", "/etc/ssl/certs/ca-certificates.crt")
    trusted = {line for line in base.stdout.splitlines() if len(line) == 64}
    host_only = [line for line in bundle.read_text().splitlines() if len(line) == 64 and line not in trusted]
    if not host_only:
        pytest.skip("the host trusts no certificate beyond the base image's: nothing to look for")
    needle = host_only[len(host_only) // 2]
    found = docker_run(docker_engine, cpu_image, "grep", "-rlF", "--", needle,
                       "/etc", "/opt", "/home", "/root", "/tmp", "/usr/local", "/var", "/run", user="0")
    assert found.returncode == 1 and found.stdout == "", f"host-only CA material in the image: {found.stdout}"


@pytest.fixture
def staged(s3_server, tmp_path):
    """A config whose one source is generated chat logs already in S3 (as a team's export would be)."""
    s3_server.create_bucket(BUCKET)
    cfg = parse_config({
        "data": {"sample": {"conversations": CONVERSATIONS, "broken_rows": BROKEN}},
        "storage": {"bucket": BUCKET, "prefix": "cpu-image", "endpoint_url": s3_server.endpoint},
        "tracking": {"uri": "sqlite:////track/mlflow.db", "experiment": "docker"},
    })
    return stage_sample(cfg, Store(cfg.storage), tmp_path / "sample")


def test_ingest_step_runs_in_the_image_against_s3(docker_engine, cpu_image, s3_server, staged, tmp_path):
    cfg_file = tmp_path / "mixtune.yaml"
    cfg_file.write_text(yaml.safe_dump(staged.model_dump(mode="json"), sort_keys=False))
    track = tmp_path / "track"  # the step's MLflow store, written by uid 1000
    track.mkdir()
    track.chmod(0o777)
    store = Store(staged.storage)
    run = "docker-ingest"
    artifact_root = join(store.root, "runs", run)

    proc = docker_run(docker_engine, cpu_image, "python", "-m", "components.ingest", "--config", "/cfg/mixtune.yaml",
                      "--artifact-root", artifact_root, "--pipeline-run", run,
                      env_names=tuple(s3_server.env()), volumes=(f"{cfg_file}:/cfg/mixtune.yaml:ro", f"{track}:/track"),
                      user="1000:1000", network_host=True)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    result = json_tail(proc.stdout)

    # Every row read is kept, quarantined or a duplicate, and the generated file's rows are all read.
    c = result["counts"]
    assert c["rows_read"] == CONVERSATIONS + BROKEN
    assert c["rows_read"] == c["rows_kept"] + c["rows_quarantined"] + c["rows_duplicate"]
    assert c["rows_quarantined"] >= BROKEN and c["records_kept"] > 0

    # What the container wrote, read back from the host through boto3.
    s3 = s3_server.client()

    def get(uri: str) -> bytes:
        u = S3Uri.parse(uri)
        return s3.get_object(Bucket=u.bucket, Key=u.key)["Body"].read()

    version_dir = S3Uri.parse(result["records_uri"])
    assert version_dir.key.endswith(f"datasets/{result['dataset_version']}")
    keys = {o["Key"].rsplit("/", 1)[1] for o in
            s3.list_objects_v2(Bucket=version_dir.bucket, Prefix=version_dir.key + "/")["Contents"]}
    assert keys == {"manifest.json", "train.parquet", "validation.parquet", "test.parquet"}
    manifest = json.loads(get(join(result["records_uri"], "manifest.json")))
    assert manifest["dataset_version"] == result["dataset_version"]
    assert manifest["split_rows"] == result["split_rows"]
    assert sum(manifest["split_rows"].values()) == c["records_kept"]
    for split, rows in manifest["split_rows"].items():
        data = get(join(result["records_uri"], f"{split}.parquet"))
        assert hashlib.sha256(data).hexdigest() == manifest["sha256"][split]
        assert pq.read_metadata(io.BytesIO(data)).num_rows == rows
    report = json.loads(get(join(artifact_root, "ingest", "report.json")))
    assert report["counts"] == c and report["dataset_version"] == result["dataset_version"]
    quarantine = pq.read_table(io.BytesIO(get(join(artifact_root, "ingest", "quarantine.parquet"))))
    assert quarantine.num_rows == c["records_quarantined"]

    # The step's MLflow run, in the SQLite store the container wrote.
    runs = MlflowClient(f"sqlite:///{track}/mlflow.db").search_runs(
        [MlflowClient(f"sqlite:///{track}/mlflow.db").get_experiment_by_name("docker").experiment_id],
        filter_string=f"tags.`mixtune.dataset_version` = '{result['dataset_version']}'")
    assert len(runs) == 1 and runs[0].data.metrics["rows_read"] == c["rows_read"]

    # The same sources ingested on the host give the same content-addressed version.
    host_cfg = staged.model_copy(update={"storage": staged.storage.model_copy(update={"prefix": "cpu-image-host"})})
    host_store = Store(host_cfg.storage)
    host = write_dataset(host_cfg, join(host_store.root, "runs", "host"), host_store)
    assert host.dataset_version == result["dataset_version"] and host.counts == c


def test_kfp_docker_runner_runs_the_ingest_component_in_the_image(docker_engine, cpu_image, s3_server, staged,
                                                                   tmp_path, monkeypatch):
    """The way KFP runs it: the lightweight component through `python -m kfp.dsl.executor_main` in the
    image (kfp.local's DockerRunner), with its outputs back in the pipeline root."""
    from kfp import local
    from kfp.local.config import LocalExecutionConfig

    from components.ingest import component as ingest_component

    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    monkeypatch.setattr(LocalExecutionConfig, "instance", None)  # local.init below is for this test only
    root = tmp_path / "kfp"  # mounted at the same path; the step (uid 1000) writes its outputs there
    root.mkdir()
    root.chmod(0o777)
    cfg = staged.model_copy(update={"tracking": staged.tracking.model_copy(update={"uri": f"sqlite:///{root}/mlflow.db"})})
    local.init(runner=local.DockerRunner(network_mode="host", user="1000:1000", environment=s3_server.env()),
               pipeline_root=str(root))
    run = "kfp-docker"
    task = ingest_component.build(cpu_image)(config_json=cfg.model_dump_json(), pipeline_run=run,
                                             artifact_root=join(Store(cfg.storage).root, "runs", run))
    version = task.outputs["dataset_version"]
    assert task.outputs["records_uri"].endswith(f"/datasets/{version}")
    assert Store(cfg.storage).get_json(join(task.outputs["records_uri"], "manifest.json"))["dataset_version"] == version
    metrics = task.outputs["metrics"].metadata
    assert metrics["rows_read"] == CONVERSATIONS + BROKEN
    assert metrics["rows_read"] == metrics["rows_kept"] + metrics["rows_quarantined"] + metrics["rows_duplicate"]


def test_the_image_serves_a_version_as_the_inferenceservice_runs_it(docker_engine, cpu_image, tmp_path):
    """The KServe predictor's container: a version's files in /mnt/models (read-only), served as uid 1000."""
    import time

    import mlflow
    import requests

    from pipelines.embedded import free_ports
    from tests.tiny_models import dialogues, package_folder, tiny_model_dirs

    cfg = parse_config({"generation": {"max_new_tokens": 8}})
    local = package_folder(tiny_model_dirs(tmp_path, seeds=(0,))[0], cfg)
    for path in [local, *local.rglob("*")]:  # readable by uid 1000, as the storage initializer leaves them
        path.chmod(0o755 if path.is_dir() else 0o644)
    texts = [t for _, t in dialogues(3)]
    expected = list(mlflow.pyfunc.load_model(str(local)).predict(texts))
    port = free_ports(1)[0]
    started = docker_engine.run(
        "run", "-d", "--rm", "--network=host", "--user", "1000:1000", "--volume", f"{local}:/mnt/models:ro",
        "--env", "MIXTUNE_MODEL_NAME=mixtune-summarizer", "--env", "MIXTUNE_MODEL_VERSION=7", cpu_image,
        "python", "-m", "components.serve", "--model-uri", "/mnt/models", "--host", "127.0.0.1", "--port", str(port),
        check=False)
    assert started.returncode == 0, started.stderr[-3000:]
    container = started.stdout.strip()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            try:
                if requests.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            logs = docker_engine.run("logs", container, check=False)
            assert time.time() < deadline, f"not ready:\n{logs.stdout[-2000:]}\n{logs.stderr[-3000:]}"
            time.sleep(1)
        r = requests.post(f"{url}/invocations", json={"inputs": texts}, timeout=120)
        assert r.status_code == 200 and r.json() == {"predictions": expected}
        assert r.headers["X-Mixtune-Model-Version"] == "7"
        assert requests.get(f"{url}/health", timeout=5).json() == {"status": "alive"}
    finally:
        docker_engine.run("stop", "-t", "20", container, check=False)
