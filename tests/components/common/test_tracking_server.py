"""The in-cluster setup, on one machine: an MLflow tracking server with proxied artifacts in S3 (as
infra/base/mlflow runs it, SQLite standing in for PostgreSQL). A step's experiment takes the server's
artifact store, and its artifacts reach S3 through the server with no S3 credentials in the client."""
from __future__ import annotations

import pytest

from components.common import tracking
from components.common.storage import Store
from tests.mlflow_server import mlflow_server

pytestmark = pytest.mark.slow


@pytest.fixture
def proxied_server(s3_server, tmp_path, tiny_config):
    destination = f"s3://{tiny_config.storage.bucket}/{tiny_config.storage.prefix}/mlflow-server"
    with mlflow_server(tmp_path, s3_server.endpoint, destination) as (url, _):
        yield url, destination


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
