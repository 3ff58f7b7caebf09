"""The in-cluster setup, on one machine: an MLflow tracking server with proxied artifacts in S3 (as
infra/base/mlflow runs it, SQLite standing in for PostgreSQL). A step's experiment takes the server's
artifact store, and its artifacts reach S3 through the server with no S3 credentials in the client."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from components.common import tracking
from components.common.storage import Store
from pipelines.embedded import free_ports

pytestmark = pytest.mark.slow


@pytest.fixture
def proxied_server(s3_server, tmp_path, tiny_config):
    port = free_ports(1)[0]
    destination = f"s3://{tiny_config.storage.bucket}/{tiny_config.storage.prefix}/mlflow-server"
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", destination,
           "--serve-artifacts"]
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, destination
    os.killpg(proc.pid, signal.SIGTERM)  # its own process group: the workers go too
    proc.wait(timeout=30)


def test_artifacts_go_through_the_server_to_s3(proxied_server, tiny_config, monkeypatch):
    url, destination = proxied_server
    cfg = tiny_config.model_copy(update={"tracking": tiny_config.tracking.model_copy(
        update={"uri": url, "experiment": "proxied"})})
    store = Store(cfg.storage)
    # The client has no S3 keys at all: only the server does.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"endpoint_url": None})})
    import mlflow

    with tracking.step_run(cfg, "proxied-run", "evaluate") as run:
        mlflow.log_dict({"rouge": 1}, "report/metrics.json")
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    objects = [uri for uri, _ in store.list(destination)]
    assert any(uri.endswith(f"{run.info.run_id}/artifacts/report/metrics.json") for uri in objects), objects
