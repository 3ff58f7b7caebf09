"""Fixtures for register tests: model prefixes and hand-written metrics.json files on real S3, and a
client of the real SQLite MLflow store."""
from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from components.common.storage import join
from tests.components.common.gate_metrics import gate_metrics, task_scores

NAME = "mixtune-summarizer"


@pytest.fixture
def client(tiny_config) -> MlflowClient:
    mlflow.set_tracking_uri(tiny_config.tracking.uri)
    return MlflowClient()


@pytest.fixture
def make_run(store):
    """make_run(run, candidate, champion=None, champion_version=None) -> (model_uri, eval_uri)."""

    def make(run: str, candidate: float, champion: float | None = None, champion_version: str | None = None,
             complete: bool = True) -> tuple[str, str]:
        model_uri = join(store.root, "runs", run, "model")
        store.put_json(join(model_uri, "config.json"), {"model_type": "t5", "run": run})
        store.put_bytes(join(model_uri, "model.safetensors"), b"weights of " + run.encode())
        if complete:
            store.put_bytes(join(model_uri, "_COMPLETE"), b"")
        eval_uri = join(store.root, "runs", run, "evaluate")

        metrics = gate_metrics({"summarization": task_scores(candidate, 1.0, champion)},
                               champion_version=champion_version, model_uri=model_uri)
        store.put_json(join(eval_uri, "metrics.json"), metrics)
        return model_uri, eval_uri

    return make


def aliases(client: MlflowClient) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()}
