"""Evaluate end to end on real S3 (SeaweedFS) and a real SQLite MLflow store, with tiny real T5s."""
from __future__ import annotations

import io
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from components.common.storage import join
from components.common.tracking import PIPELINE_TAG
from components.common.storage import IncompleteModelError
from components.common.schemas import EXAMPLE_SCHEMA
from components.evaluate.core import run_evaluate
from components.evaluate.evalset import eval_set_sha256, select_examples
from components.evaluate.rouge import rouge
from components.common.generation import GenerationSettings, generate


def test_evaluate_scores_base_and_candidate_on_the_same_examples(tiny_config, store, examples_uri, models, rows):
    root = join(store.root, "runs", "r1")
    r = run_evaluate(tiny_config, examples_uri, models["candidate"], models["base"], root, "r1")

    assert r.eval_uri == join(root, "evaluate")
    preds = pq.read_table(io.BytesIO(store.get_bytes(join(r.eval_uri, "predictions.parquet")))).to_pylist()
    expected = select_examples(rows, tiny_config.evaluate.max_examples, ["summarization"])
    assert [p["id"] for p in preds] == [e["id"] for e in expected]
    assert len(preds) == tiny_config.evaluate.max_examples == 16
    assert set(preds[0]) == {"id", "task", "inputs", "references", "base", "candidate", "champion",
                             "base_score", "candidate_score", "champion_score", "base_unsupported",
                             "candidate_unsupported", "champion_unsupported", "base_degenerate",
                             "candidate_degenerate", "champion_degenerate"}
    assert all(p["champion_unsupported"] is None and isinstance(p["candidate_unsupported"], list) for p in preds)
    assert all(p["champion"] is None and p["champion_score"] is None for p in preds)
    assert [p["references"] for p in preds] == [[e["targets"]] for e in expected]

    m = store.get_json(join(r.eval_uri, "metrics.json"))
    assert m == r.metrics and m["schema"] == 2 and m["primary_task"] == "summarization"
    t = m["tasks"]["summarization"]
    assert (t["family"], t["primary"], t["n"]) == ("rouge", "rougeL", 16)
    for role in ("candidate", "base"):
        assert set(t["scores"][role]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
        assert all(0.0 <= v <= 100.0 for v in t["scores"][role].values())
        low, high = t["ci"][role]
        assert low <= t["scores"][role]["rougeL"] <= high
    assert t["scores"]["champion"] is None and t["delta"]["champion"] is None and m["champion_version"] is None
    assert m["n_examples"] == 16 and m["dataset_version"] == "dv-test-1"
    assert m["eval_set_sha256"] == eval_set_sha256(expected)
    assert m["model_uri"] == models["candidate"] and m["base_model_uri"] == models["base"]
    # The trained model learned the summaries' words; the random one emits noise, and the paired
    # interval of the difference says so with confidence.
    assert t["scores"]["candidate"]["rougeL"] > t["scores"]["base"]["rougeL"] + 5
    d = t["delta"]["base"]
    assert d["low"] > 0 and d["mean"] == pytest.approx(t["scores"]["candidate"]["rougeL"] - t["scores"]["base"]["rougeL"])
    assert m["gate"]["promote"] and m["gate"]["baseline"] == "base"
    # Faithfulness beside ROUGE: rates per model with intervals, paired deltas, and checks in the verdict.
    f = t["faithfulness"]
    assert f["n"] == 16 and f["scores"]["champion"] is None
    for role in ("candidate", "base"):
        assert set(f["scores"][role]) == {"unsupported", "name_coverage", "degenerate"}
        for k, v in f["scores"][role].items():
            assert 0.0 <= f["ci"][role][k][0] <= v <= f["ci"][role][k][1] <= 100.0
    assert f["delta"]["degenerate"]["base"]["mean"] == pytest.approx(
        f["scores"]["candidate"]["degenerate"] - f["scores"]["base"]["degenerate"])
    flagged = [p for p in preds if p["candidate_degenerate"]]
    assert len(flagged) == round(f["scores"]["candidate"]["degenerate"] * 16 / 100)
    names = [c["name"] for c in m["gate"]["checks"]]
    assert "summarization unsupported facts <= 100%" in names and "summarization degenerate outputs <= 100%" in names
    assert m["generation"]["no_repeat_ngram_size"] == tiny_config.generation.no_repeat_ngram_size
    # The evaluated set is frozen next to the scores, and re-reading it gives the same content hash.
    frozen = pq.read_table(io.BytesIO(store.get_bytes(m["eval_set_uri"]))).to_pylist()
    assert eval_set_sha256(frozen) == m["eval_set_sha256"]
    report = store.get_bytes(join(r.eval_uri, "report.html")).decode()
    assert report == r.report_html and "summarization" in report and "data:image/png;base64," in report

    mlflow.set_tracking_uri(tiny_config.tracking.uri)
    run = MlflowClient().get_run(r.mlflow_run_id)
    assert run.info.run_name == "5-evaluate" and run.data.tags[PIPELINE_TAG] == "r1"
    assert "mlflow.parentRunId" in run.data.tags
    assert run.data.metrics["summarization/candidate_rougeL"] == pytest.approx(t["scores"]["candidate"]["rougeL"])
    assert run.data.metrics["summarization/base_rouge2"] == pytest.approx(t["scores"]["base"]["rouge2"])
    assert run.data.metrics["summarization/candidate_unsupported"] == pytest.approx(f["scores"]["candidate"]["unsupported"])
    logged = mlflow.artifacts.load_dict(f"runs:/{r.mlflow_run_id}/evaluate/metrics.json")
    assert logged["eval_set_sha256"] == m["eval_set_sha256"]
    assert "<html" in mlflow.artifacts.load_text(f"runs:/{r.mlflow_run_id}/evaluate/report.html")
    inputs = run.inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("mixtune-eval-set", m["eval_set_sha256"][:36])]


def test_several_tasks_multiple_references_and_a_frozen_eval_set(tiny_config, store, models, rows, tmp_path):
    # Summaries with extra references, and a rating task scored by accuracy/MAE on the same run.
    summaries = [dict(r, references=[r["targets"], "Someone asked for help."]) for r in rows[:6]]
    ratings = [{"id": f"yelp:{i}#0", "record_id": f"yelp:{i}", "task": "review_rating", "template_id": "r1",
                "template_kind": "zero_shot", "inputs": f"Review: place number {i} was fine.\nStars:",
                "targets": str(1 + i % 5), "references": None} for i in range(5)]
    frozen = tmp_path / "frozen.parquet"
    pq.write_table(pa.Table.from_pylist(summaries + ratings, schema=EXAMPLE_SCHEMA), frozen)
    cfg = tiny_config.model_copy(update={"evaluate": tiny_config.evaluate.model_copy(update={
        "tasks": ["summarization", "review_rating"], "eval_set_uri": str(frozen), "max_examples": 4})})
    examples_uri = join(store.root, "runs", "r2", "examples")  # only its manifest is read: the set is frozen
    store.put_json(join(examples_uri, "manifest.json"), {"dataset_version": "dv-new"})
    r = run_evaluate(cfg, examples_uri, models["candidate"], models["base"], join(store.root, "runs", "r2"), "r2")

    m = r.metrics
    assert list(m["tasks"]) == ["summarization", "review_rating"] and m["n_examples"] == 8
    rating = m["tasks"]["review_rating"]
    assert (rating["family"], rating["primary"], rating["n"], rating["lower_is_better"]) == ("rating", "accuracy", 4, ["mae"])
    assert set(rating["scores"]["candidate"]) == {"accuracy", "mae", "parsed"}
    assert m["eval_set_source"] == str(frozen) and m["dataset_version"] == "dv-new"
    preds = pq.read_table(io.BytesIO(store.get_bytes(join(r.eval_uri, "predictions.parquet")))).to_pylist()
    assert [p["task"] for p in preds] == ["summarization"] * 4 + ["review_rating"] * 4
    assert preds[0]["references"] == [preds[0]["references"][0], "Someone asked for help."]
    # Multiple references: the best one counts, so adding one never lowers a score.
    single = rouge([p["candidate"] for p in preds[:4]], [p["references"][:1] for p in preds[:4]])
    assert m["tasks"]["summarization"]["scores"]["candidate"]["rouge1"] >= single["rouge1"]

    missing = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"tasks": ["summarization", "ner"]})})
    with pytest.raises(ValueError, match=r"no examples of tasks \['ner'\]"):
        run_evaluate(missing, examples_uri, models["candidate"], models["base"], join(store.root, "runs", "r3"), "r3")


def test_eval_set_is_deterministic_and_content_addressed(rows):
    a = select_examples(rows, 5)
    b = select_examples(list(reversed(rows)), 5)
    assert a == b and eval_set_sha256(a) == eval_set_sha256(b)
    changed = [dict(a[0], targets=a[0]["targets"] + "!")] + a[1:]
    assert eval_set_sha256([dict(a[0], references=[a[0]["targets"], "x"])] + a[1:]) != eval_set_sha256(a)
    assert eval_set_sha256(changed) != eval_set_sha256(a)
    with pytest.raises(ValueError, match="duplicate"):
        select_examples(rows + rows[:1], 5)
    # Two sources feeding one task: the quota is shared, not filled by the alphabetically first.
    mixed = [dict(r, id=f"{src}:{i}") for i, r in enumerate(rows) for src in ("alpha", "zulu")]
    sources = {e["id"].split(":")[0] for e in select_examples(mixed, 10)}
    assert sources == {"alpha", "zulu"}


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
