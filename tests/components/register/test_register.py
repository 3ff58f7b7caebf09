"""Register on a real SQLite MLflow store and real S3: aliases, tags, the gate, refusals, retries.

Register never loads the model, so these use small model prefixes (config + weights placeholder +
_COMPLETE) and metrics.json files written by hand in the layout evaluate writes.
"""
from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml

from components.common.tracking import PIPELINE_TAG
from components.common.storage import IncompleteModelError
from components.register.core import run_register
from tests.components.register.conftest import NAME, aliases

def test_first_model_becomes_champion_and_challenger_with_tags(tiny_config, client, make_run, tmp_path):
    model_uri, eval_uri = make_run("r1", candidate=20.0)
    r = run_register(tiny_config, model_uri, eval_uri, "train-run-1", "r1")

    assert (r.version, r.promoted, r.previous_champion) == ("1", True, None)
    assert r.aliases == ["challenger", "champion"] and "vs base model" in r.reason
    assert aliases(client) == {"champion": "1", "challenger": "1"}
    mv = client.get_model_version(NAME, "1")
    assert mv.source == model_uri and mv.run_id == "train-run-1"
    tags = mv.tags
    assert tags[PIPELINE_TAG] == "r1" and tags["mixtune.train_run_id"] == "train-run-1"
    assert tags["mixtune.dataset_version"] == "dv-1" and tags["mixtune.eval_set_sha256"] == "ab" * 32
    assert float(tags["metric.summarization.candidate_rougeL"]) == 20.0
    assert "metric.summarization.base_other" not in tags  # the primary metric only: the rest is in the description
    assert tags["metric.summarization.delta_base_rougeL"] == "19.000000 [18.000000, 20.000000]"
    assert tags["mixtune.eval_uri"] == eval_uri and tags["mixtune.replaced_champion"] == "none"
    assert tags["mixtune.primary"] == "summarization/rougeL" and len(tags["mixtune.git_commit"]) >= 7
    # The description holds the verdict, every gate check and the primary scores, as Markdown tables.
    assert mv.description.startswith("**champion**: promoted. " + r.reason)
    check_rows = [ln for ln in mv.description.splitlines() if ln.startswith("| summarization unsupported facts")]
    assert check_rows and " | yes | " in check_rows[0]
    assert "| summarization | rougeL | 20.00 | — | 1.00 | — |" in mv.description, mv.description
    assert len(tags) <= 22, sorted(tags)
    assert tags["mixtune.gate"] == "promote" and tags["mixtune.gate_reason"] == r.reason
    assert tags["mixtune.model_uri"] == model_uri
    assert tags["mixtune.mlflow_model"] == "pyfunc"

    run = client.get_run(r.mlflow_run_id)
    assert run.info.run_name == "6-register" and "mlflow.parentRunId" in run.data.tags
    assert run.data.metrics["promoted"] == 1.0 and run.data.params["version"] == "1"
    # The registry resolves the alias to the s3 prefix and fetches the files.
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@champion", dst_path=str(tmp_path / "dl")))
    assert (local / "model.safetensors").read_bytes() == b"weights of r1" and (local / "_COMPLETE").exists()
    # ... and it is an MLflow model (pyfunc, models from code) beside the untouched weights.
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["config"]["prompt"] == tiny_config.infer.prompt
    assert (local / "summarizer_model.py").is_file() and (local / "requirements.txt").is_file()


def test_the_mlflow_model_is_written_before_the_version_exists(tiny_config, client, make_run, monkeypatch):
    from mlflow.tracking import MlflowClient

    from components.common.storage import Store

    model_uri, eval_uri = make_run("r1", candidate=20.0)
    seen = []
    create = MlflowClient.create_model_version

    def create_and_look(self, name, source, **kw):
        seen.append(Store(tiny_config.storage).exists(f"{source}/MLmodel"))
        return create(self, name, source, **kw)

    monkeypatch.setattr(MlflowClient, "create_model_version", create_and_look)
    run_register(tiny_config, model_uri, eval_uri, "t1", "r1")
    assert seen == [True]


def test_worse_candidate_is_challenger_only_and_better_one_takes_over(tiny_config, client, make_run):
    run_register(tiny_config, *make_run("r1", candidate=20.0), "t1", "r1")

    worse = run_register(tiny_config, *make_run("r2", candidate=18.0, champion=20.0, champion_version="1"), "t2", "r2")
    assert (worse.version, worse.promoted, worse.aliases, worse.previous_champion) == ("2", False, ["challenger"], "1")
    assert aliases(client) == {"champion": "1", "challenger": "2"}
    assert client.get_model_version(NAME, "2").tags["mixtune.gate"] == "keep"
    assert "improves summarization failed" in worse.reason

    better = run_register(tiny_config, *make_run("r3", candidate=22.5, champion=20.0, champion_version="1"), "t3", "r3")
    assert (better.version, better.promoted, better.previous_champion) == ("3", True, "1")
    assert aliases(client) == {"champion": "3", "challenger": "3"}
    assert float(client.get_model_version(NAME, "3").tags["metric.summarization.champion_rougeL"]) == 20.0
    assert client.get_model_version(NAME, "3").tags["mixtune.replaced_champion"] == "1"


def test_champion_changed_after_evaluation_is_not_promoted(tiny_config, client, make_run):
    run_register(tiny_config, *make_run("r1", candidate=20.0), "t1", "r1")
    # r2 and r3 were both evaluated against v1; r3 registers first and wins.
    r2 = make_run("r2", candidate=30.0, champion=20.0, champion_version="1")
    run_register(tiny_config, *make_run("r3", candidate=25.0, champion=20.0, champion_version="1"), "t3", "r3")
    assert aliases(client)["champion"] == "2"

    late = run_register(tiny_config, *r2, "t2", "r2")
    assert not late.promoted and late.aliases == ["challenger"]
    assert "champion changed since evaluation (v1 then, v2 now)" in late.reason
    assert aliases(client) == {"champion": "2", "challenger": "3"}


def test_missing_complete_marker_is_refused(tiny_config, client, make_run):
    model_uri, eval_uri = make_run("r1", candidate=20.0, complete=False)
    with pytest.raises(IncompleteModelError, match=r"runs/r1/model: no _COMPLETE marker"):
        run_register(tiny_config, model_uri, eval_uri, "t1", "r1")
    assert client.search_model_versions(f"name = '{NAME}'") == []


def test_metrics_of_another_model_are_refused(tiny_config, make_run):
    model_uri, _ = make_run("r1", candidate=20.0)
    _, other_eval = make_run("r2", candidate=99.0)
    with pytest.raises(ValueError, match="evaluated .*runs/r2/model"):
        run_register(tiny_config, model_uri, other_eval, "t1", "r1")


def test_retry_of_the_same_step_reuses_the_version(tiny_config, client, make_run):
    args = make_run("r1", candidate=20.0)
    first = run_register(tiny_config, *args, "", "r1")  # no train run id: allowed, recorded as empty
    again = run_register(tiny_config, *args, "", "r1")
    assert again.version == first.version == "1" and again.promoted
    versions = client.search_model_versions(f"name = '{NAME}'")
    assert len(versions) == 1 and not versions[0].run_id
    assert aliases(client) == {"champion": "1", "challenger": "1"}
