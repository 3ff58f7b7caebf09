"""evaluate -> register twice, through the CLIs, on real models, S3 and MLflow: the second evaluation
scores the registered champion on the same examples, and register gates on those numbers."""
from __future__ import annotations

import json

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from components.common.storage import join
from components.evaluate.__main__ import main as evaluate_main
from components.register.__main__ import main as register_main


def cli_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_champion_is_scored_on_the_same_set_and_gates_a_worse_model(tiny_config, store, examples_uri, models,
                                                                   tmp_path, capsys):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    root1, root2 = join(store.root, "runs", "p1"), join(store.root, "runs", "p2")

    # Run 1: the trained model, no champion yet -> it becomes champion.
    evaluate_main(["--config", str(cfg_file), "--examples-uri", examples_uri, "--model-uri", models["candidate"],
                   "--base-model-uri", models["base"], "--artifact-root", root1, "--pipeline-run", "p1"])
    ev1 = cli_json(capsys)
    assert ev1["eval_uri"] == join(root1, "evaluate") and "summarization/champion_rougeL" not in ev1
    assert ev1["gate"].startswith("promote:")
    register_main(["--config", str(cfg_file), "--model-uri", models["candidate"], "--eval-uri", ev1["eval_uri"],
                   "--train-run-id", "train-1", "--pipeline-run", "p1"])
    reg1 = cli_json(capsys)
    assert reg1["promoted"] and reg1["version"] == "1" and reg1["aliases"] == ["challenger", "champion"]

    # Run 2: the random model as candidate; evaluate also scores champion v1 with the same settings.
    evaluate_main(["--config", str(cfg_file), "--examples-uri", examples_uri, "--model-uri", models["base"],
                   "--base-model-uri", models["base"], "--artifact-root", root2, "--pipeline-run", "p2"])
    ev2 = cli_json(capsys)
    m1 = store.get_json(join(root1, "evaluate", "metrics.json"))
    m2 = store.get_json(join(root2, "evaluate", "metrics.json"))
    assert m2["champion_version"] == "1" and m2["champion_uri"] == models["candidate"]
    assert m2["eval_set_sha256"] == m1["eval_set_sha256"]
    s1, s2 = m1["tasks"]["summarization"]["scores"], m2["tasks"]["summarization"]["scores"]
    assert s2["candidate"] == s2["base"]  # one model under two roles generates once, scores alike
    assert s2["champion"] == pytest.approx(s1["candidate"])  # greedy decoding is deterministic
    assert ev2["summarization/champion_rougeL"] == pytest.approx(s1["candidate"]["rougeL"])
    assert m2["tasks"]["summarization"]["delta"]["champion"]["high"] < 0 and not m2["gate"]["promote"]
    preds1 = store.get_bytes(join(root1, "evaluate", "predictions.parquet"))
    assert preds1  # written next to metrics.json

    register_main(["--config", str(cfg_file), "--model-uri", models["base"], "--eval-uri", ev2["eval_uri"],
                   "--train-run-id", "train-2", "--pipeline-run", "p2"])
    reg2 = cli_json(capsys)
    assert not reg2["promoted"] and reg2["aliases"] == ["challenger"] and reg2["previous_champion"] == "1"

    mlflow.set_tracking_uri(tiny_config.tracking.uri)
    client = MlflowClient()
    assert {k: str(v) for k, v in client.get_registered_model("mixtune-summarizer").aliases.items()} == {
        "champion": "1", "challenger": "2"}
    v2 = client.get_model_version("mixtune-summarizer", "2")
    assert float(v2.tags["metric.summarization.champion_rougeL"]) == pytest.approx(s1["candidate"]["rougeL"], abs=1e-5)
    assert v2.tags["mixtune.gate"] == "keep" and "improves summarization failed" in v2.tags["mixtune.gate_reason"]
    # Each step's run is nested under its own pipeline's parent run.
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    steps = sorted((r.data.tags.get("mixtune.pipeline_run"), r.info.run_name) for r in runs
                   if r.data.tags.get("mixtune.role") == "step")
    assert steps == [("p1", "5-evaluate"), ("p1", "6-register"), ("p2", "5-evaluate"), ("p2", "6-register")]
