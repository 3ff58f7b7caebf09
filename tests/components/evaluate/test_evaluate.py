"""Evaluate end to end on real S3 (SeaweedFS) and a real SQLite MLflow store, with tiny real T5s."""
from __future__ import annotations

import io
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from components.common.storage import join
from components.common.tracking import PIPELINE_TAG
from components.common.storage import IncompleteModelError
from components.evaluate.core import eval_set_sha256, run_evaluate, select_examples
from components.evaluate.generation import GenerationSettings, generate


def test_evaluate_scores_base_and_candidate_on_the_same_examples(tiny_config, store, examples_uri, models, rows):
    root = join(store.root, "runs", "r1")
    r = run_evaluate(tiny_config, examples_uri, models["candidate"], models["base"], root, "r1")

    assert r.eval_uri == join(root, "evaluate")
    preds = pq.read_table(io.BytesIO(store.get_bytes(join(r.eval_uri, "predictions.parquet")))).to_pylist()
    expected = select_examples(rows, tiny_config.evaluate.max_examples)
    assert [p["id"] for p in preds] == sorted(p["id"] for p in preds) == [e["id"] for e in expected]
    assert len(preds) == tiny_config.evaluate.max_examples == 16
    assert set(preds[0]) == {"id", "inputs", "reference", "base", "candidate", "champion"}
    assert all(p["champion"] is None for p in preds)
    assert [p["reference"] for p in preds] == [e["targets"] for e in expected]

    m = store.get_json(join(r.eval_uri, "metrics.json"))
    assert m == r.metrics
    for role in ("candidate", "base"):
        assert set(m[role]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
        assert all(0.0 <= v <= 100.0 for v in m[role].values())
    assert m["champion"] is None and m["champion_version"] is None
    assert m["n_examples"] == 16 and m["dataset_version"] == "dv-test-1"
    assert m["eval_set_sha256"] == eval_set_sha256(expected)
    assert m["model_uri"] == models["candidate"] and m["base_model_uri"] == models["base"]
    # The trained model learned the summaries' words; the random one emits noise.
    assert m["candidate"]["rougeL"] > m["base"]["rougeL"] + 5
    assert r.flat_metrics()["candidate_rougeL"] == m["candidate"]["rougeL"]

    mlflow.set_tracking_uri(tiny_config.tracking.uri)
    run = MlflowClient().get_run(r.mlflow_run_id)
    assert run.info.run_name == "evaluate" and run.data.tags[PIPELINE_TAG] == "r1"
    assert "mlflow.parentRunId" in run.data.tags
    assert run.data.metrics["candidate_rougeL"] == pytest.approx(m["candidate"]["rougeL"])
    assert run.data.metrics["base_rouge2"] == pytest.approx(m["base"]["rouge2"])
    logged = mlflow.artifacts.load_dict(f"runs:/{r.mlflow_run_id}/evaluate/metrics.json")
    assert logged["eval_set_sha256"] == m["eval_set_sha256"]


def test_eval_set_is_deterministic_and_content_addressed(rows):
    a = select_examples(rows, 5)
    b = select_examples(list(reversed(rows)), 5)
    assert a == b and eval_set_sha256(a) == eval_set_sha256(b)
    changed = [dict(a[0], targets=a[0]["targets"] + "!")] + a[1:]
    assert eval_set_sha256(changed) != eval_set_sha256(a)
    with pytest.raises(ValueError, match="duplicate"):
        select_examples(rows + rows[:1], 5)


@pytest.mark.parametrize("which", ["candidate", "base"])
def test_model_without_complete_marker_is_refused(tiny_config, store, examples_uri, model_dirs, models, upload, which):
    partial = upload(model_dirs["random"], join(store.root, "runs", "r1", "partial"), complete=False)
    args = {"candidate": models["candidate"], "base": models["base"], which: partial}
    with pytest.raises(IncompleteModelError, match=r"partial: no _COMPLETE marker"):
        run_evaluate(tiny_config, examples_uri, args["candidate"], args["base"], join(store.root, "runs", "r1"), "r1")
    assert not store.exists(join(store.root, "runs", "r1", "evaluate", "metrics.json"))


def test_batched_generation_matches_one_at_a_time(model_dirs, rows):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(model_dirs["trained"])
    tok = AutoTokenizer.from_pretrained(model_dirs["trained"])
    texts = [r["inputs"] for r in rows[:6]]
    one = generate(model, tok, texts, GenerationSettings(1, 1, 16, 192))
    batched = generate(model, tok, texts, GenerationSettings(4, 1, 16, 192))
    assert batched == one and len(set(one)) >= 1 and all(isinstance(t, str) for t in one)
    beams = generate(model, tok, texts[:2], GenerationSettings(2, 2, 8, 192))
    assert len(beams) == 2



def test_find_champion_resolves_s3_and_runs_sources(tiny_config, store, tmp_path):
    from components.common.tracking import setup
    from components.evaluate.core import find_champion

    name = tiny_config.registry.model_name
    exp_id = setup(tiny_config)
    client = MlflowClient()
    assert find_champion(tiny_config, tmp_path) is None  # no registered model yet
    client.create_registered_model(name)
    v1 = client.create_model_version(name, source=join(store.root, "m1"))
    assert find_champion(tiny_config, tmp_path) is None  # a model, but no champion alias
    client.set_registered_model_alias(name, "champion", v1.version)
    assert find_champion(tiny_config, tmp_path).uri == join(store.root, "m1")

    # A champion registered from run artifacts (runs:/ source) is fetched through the registry.
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_artifacts(str(model_dir), "model")
    v2 = client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", v2.version)
    champion = find_champion(tiny_config, tmp_path / "work")
    assert champion.version == "2" and (Path(champion.uri) / "config.json").read_text() == "{}"
