"""The whole DAG through kfp.local against a real SeaweedFS and a real SQLite MLflow."""
import json

import pytest
from mlflow.tracking import MlflowClient

from components.common.config import parse_config
from pipelines.embedded import LocalS3
from pipelines.local import run_local

STEP_DIRS = ["ingest", "templates", "shards", "train", "evaluate"]


@pytest.mark.slow
def test_two_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config({
        "data": {"sample": {"conversations": 400}},
        # One task and 120 steps: inverse templates (write the chat from its summary) would take a
        # quarter of a budget this small; multi-task configs keep every kind (the default).
        "templates": {"kinds": ["zero_shot", "few_shot"]},
        "model": {"tiny": {"d_model": 64, "d_ff": 256, "d_kv": 16, "num_heads": 4, "num_layers": 2,
                           "num_decoder_layers": 2, "vocab_size": 1000},
                  "max_source_length": 256, "max_target_length": 64},
        "train": {"num_processes": 2, "max_steps": 120, "micro_batch_size": 16, "learning_rate": 3e-3},
        "evaluate": {"max_examples": 24, "batch_size": 12, "max_new_tokens": 48},
        "tracking": {"uri": "sqlite:///state/mlflow.db"},
    })
    first = run_local(cfg, tmp_path / "state")
    m = first["metrics"]["summarization"]
    assert m["candidate"]["rougeL"] > m["base"]["rougeL"] + 5, m  # fine-tuning learned something
    assert first["registered"]["aliases"] and "champion" in first["registered"]["aliases"]
    assert first["evaluation"]["gate"]["promote"] and first["registered"]["decision"].startswith("promote:")
    assert first["rows"][0][1] == first["rows"][0][2] + first["rows"][0][3] + first["rows"][0][4]

    # Every step's artifacts are objects in S3 (the server's data outlives it).
    with LocalS3(tmp_path / "state" / "s3") as s3:
        keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket="mixtune", MaxKeys=1000)["Contents"]]
    root = first["artifact_root"].split("s3://mixtune/")[1]
    for step in STEP_DIRS:
        assert any(k.startswith(f"{root}/{step}/") for k in keys), step
    assert f"{root}/train/model/model.safetensors" in keys and f"{root}/train/model/_COMPLETE" in keys

    # MLflow: one parent run, one nested run per step, all finished.
    client = MlflowClient(first["tracking_uri"])
    exp = client.get_experiment_by_name("mixtune")
    runs = client.search_runs([exp.experiment_id], f"tags.`mixtune.pipeline_run` = '{first['pipeline_run']}'")
    parent = [r for r in runs if r.data.tags.get("mixtune.role") == "pipeline"]
    steps = [r for r in runs if r.data.tags.get("mixtune.role") == "step"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert sorted(r.data.tags["mixtune.step"] for r in steps) == sorted(STEP_DIRS + ["register"])
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in steps)

    # A second run is scored against the first run's champion on the same test set.
    second = run_local(cfg, tmp_path / "state")
    assert second["champion_version_evaluated"] == first["registered"]["version"]
    assert second["metrics"]["summarization"]["champion"] is not None
    # Promoted only if the gate said so, and the registry agrees with the report.
    assert ("champion" in second["registered"]["aliases"]) == second["evaluation"]["gate"]["promote"]
    assert second["registered"]["version"] != first["registered"]["version"]
    assert "challenger" in second["registered"]["aliases"]
    json.dumps(second, default=str)  # the summary is JSON-serialisable
