"""Infer on real S3 (SeaweedFS) and a real SQLite MLflow registry, with tiny seeded T5 versions."""
# No `from __future__ import annotations`: KFP reads the compiled test pipeline's signature as real types.
import hashlib
import io
import json
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from components.common.config import InferConfig, MixtuneConfig
from components.common.generation import GenerationSettings, generate
from components.common.schemas import RECORD_SCHEMA, encode_fields, table_bytes
from components.common.storage import IncompleteModelError, Store, join
from components.common.tracking import PIPELINE_TAG
from components.infer.core import build_prompt, read_dataset, run_infer
from tests.tiny_models import dialogues as tiny_dialogues, register_dir, tiny_model_dirs

N_CHATS = 5


def dialogues(n: int = N_CHATS) -> list[tuple[str, str]]:
    out = tiny_dialogues(n)
    # Braces in data are plain text: only the template's one placeholder is replaced.
    rid, text = out[0]
    out[0] = (rid, text + "\nCustomer: the form said {summary} and {dialogue}, odd.")
    return out


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[int, Path]:
    """Two tiny random T5s (seeds 0 and 1) sharing a small Unigram tokenizer trained on the chats."""
    return tiny_model_dirs(tmp_path_factory.mktemp("infer-models"))


@pytest.fixture(autouse=True)
def _private_model_cache(tmp_path, monkeypatch):
    # hf.local_copy caches by URI; buckets are reused across tests, so each test gets its own cache.
    monkeypatch.setenv("MIXTUNE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def cfg(tiny_config) -> MixtuneConfig:
    infer = tiny_config.infer.model_copy(update={"batch_size": 2})
    generation = tiny_config.generation.model_copy(update={"max_new_tokens": 12})
    return tiny_config.model_copy(update={"infer": infer, "generation": generation})


def with_model(cfg: MixtuneConfig, model: str) -> MixtuneConfig:
    return cfg.model_copy(update={"infer": cfg.infer.model_copy(update={"model": model})})


def register(cfg: MixtuneConfig, store: Store, local: Path, run: str, alias: str | None = None,
             complete: bool = True) -> str:
    """A version as registered before versions were MLflow models: infer reads old and new alike."""
    return register_dir(cfg, store, local, run, alias, complete, package=False)


@pytest.fixture
def records_uri(store: Store) -> str:
    """An ingested dataset: the chats across all three splits, plus one record without a dialogue."""
    recs = [{"id": rid, "source": "sample", "split": ("train", "validation", "test")[i % 3],
             "fields": encode_fields({"dialogue": text}), "tasks": None} for i, (rid, text) in enumerate(dialogues())]
    recs.append({"id": "yelp:r1", "source": "yelp", "split": "train",
                 "fields": encode_fields({"review": "Great coffee.", "rating": "5"}), "tasks": None})
    uri = join(store.root, "datasets", "dv-infer-1")
    hashes, split_rows = {}, {}
    for split in ("train", "validation", "test"):
        rows = sorted((r for r in recs if r["split"] == split), key=lambda r: r["id"])
        data = table_bytes(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA))
        store.put_bytes(join(uri, f"{split}.parquet"), data)
        hashes[split], split_rows[split] = hashlib.sha256(data).hexdigest(), len(rows)
    store.put_json(join(uri, "manifest.json"), {"dataset_version": "dv-infer-1", "split_rows": split_rows,
                                                "sha256": hashes})
    return uri


def read_parquet(store: Store, uri: str) -> list[dict]:
    return pq.read_table(io.BytesIO(store.get_bytes(uri))).to_pylist()


def expected_summaries(cfg: MixtuneConfig, local: Path, texts: list[str]) -> list[str]:
    """What generate() gives for the same prompts and settings, with the model loaded directly."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    prompts = [build_prompt(cfg.infer.prompt, t) for t in texts]
    settings = GenerationSettings(batch_size=cfg.infer.batch_size, num_beams=cfg.generation.num_beams,
                                  max_new_tokens=cfg.generation.max_new_tokens,
                                  max_source_length=cfg.model.max_source_length)
    return generate(AutoModelForSeq2SeqLM.from_pretrained(local), AutoTokenizer.from_pretrained(local), prompts, settings)


def test_infer_summarizes_every_dialogue_with_the_champion(cfg, store, records_uri, model_dirs, monkeypatch):
    version = register(cfg, store, model_dirs[0], "r1", alias="champion")
    root = join(store.root, "runs", "infer-1")
    writes: list[str] = []
    put = Store.put_bytes
    monkeypatch.setattr(Store, "put_bytes", lambda self, uri, data: (writes.append(uri), put(self, uri, data))[1])

    r = run_infer(cfg, records_uri, root, "infer-1")

    assert (r.summaries_uri, r.model_name, r.model_version) == (join(root, "infer"), cfg.registry.model_name, version)
    chats = sorted(dialogues())
    rows = read_parquet(store, join(r.summaries_uri, "summaries.parquet"))
    assert [row["id"] for row in rows] == [rid for rid, _ in chats]
    assert [row["dialogue"] for row in rows] == [t for _, t in chats]
    assert {(row["source"], row["model_name"], row["model_version"]) for row in rows} == {
        ("sample", cfg.registry.model_name, version)}
    summaries = [row["summary"] for row in rows]
    assert summaries == expected_summaries(cfg, model_dirs[0], [t for _, t in chats])
    assert all(summaries) and len(set(summaries)) > 1  # real, input-dependent outputs
    assert read_parquet(store, join(r.summaries_uri, "skipped.parquet")) == [
        {"id": "yelp:r1", "source": "yelp", "reason": "no dialogue"}]

    m = store.get_json(join(r.summaries_uri, "manifest.json"))
    assert m == r.manifest
    assert m["counts"] == {"read": N_CHATS + 1, "summarized": N_CHATS, "skipped": 1}
    assert m["counts"]["read"] == m["counts"]["summarized"] + m["counts"]["skipped"]
    assert m["skipped_reasons"] == {"no dialogue": 1}
    assert m["model"] == {"name": cfg.registry.model_name, "version": version, "requested": "champion",
                          "uri": join(store.root, "runs", "r1", "train", "model")}
    data = store.get_bytes(join(r.summaries_uri, "summaries.parquet"))
    assert m["sha256"]["summaries.parquet"] == hashlib.sha256(data).hexdigest()
    assert m["prompt"] == cfg.infer.prompt and m["dataset_version"] == "dv-infer-1"
    assert {k: m["generation"][k] for k in ("batch_size", "num_beams", "max_new_tokens", "max_source_length")} == {
        "batch_size": 2, "num_beams": 1, "max_new_tokens": 12, "max_source_length": 192}
    assert m["summaries_per_second"] > 0 and m["seconds"] >= m["generate_seconds"] > 0
    # The manifest is the last object written: a reader that sees it sees finished files.
    assert [w.rsplit("/", 1)[1] for w in writes if w.startswith(r.summaries_uri)] == [
        "summaries.parquet", "skipped.parquet", "manifest.json"]

    mlflow.set_tracking_uri(cfg.tracking.uri)
    run = MlflowClient().get_run(r.mlflow_run_id)
    assert run.info.run_name == "2-infer" and run.data.tags[PIPELINE_TAG] == "infer-1"
    assert "mlflow.parentRunId" in run.data.tags and run.data.tags["mixtune.model_version"] == version
    assert run.data.params["model_version"] == version and run.data.params["model_requested"] == "champion"
    assert run.data.metrics["summarized"] == N_CHATS and run.data.metrics["skipped_no_dialogue"] == 1
    assert mlflow.artifacts.load_dict(f"runs:/{r.mlflow_run_id}/infer/manifest.json") == m


def test_the_registered_mlflow_model_predicts_what_infer_writes(cfg, store, records_uri, model_dirs):
    """The same version, inputs and settings: mlflow.pyfunc.load_model gives the summaries infer wrote."""
    version = register_dir(cfg, store, model_dirs[1], "r1", alias="champion")  # as the register step does
    r = run_infer(cfg, records_uri, join(store.root, "runs", "infer-pyfunc"), "infer-pyfunc")
    rows = read_parquet(store, join(r.summaries_uri, "summaries.parquet"))
    assert r.model_version == version
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion")
    assert list(model.predict([row["dialogue"] for row in rows])) == [row["summary"] for row in rows]


def test_no_champion_is_a_clear_error(cfg, store, records_uri, model_dirs):
    root = join(store.root, "runs", "infer-2")
    msg = r"no version has alias 'champion' in mixtune-summarizer: promote one first \(mixtune promote\)"
    with pytest.raises(LookupError, match=msg):  # no registered model at all
        run_infer(cfg, records_uri, root, "infer-2")
    register(cfg, store, model_dirs[0], "r1")  # a version, but no alias on it
    with pytest.raises(LookupError, match=msg):
        run_infer(cfg, records_uri, root, "infer-2")
    assert store.list(root) == []


def test_a_version_number_selects_that_version_and_a_rerun_replaces_the_output(cfg, store, records_uri, model_dirs):
    register(cfg, store, model_dirs[0], "r1", alias="champion")
    v2 = register(cfg, store, model_dirs[1], "r2")
    root = join(store.root, "runs", "infer-3")
    first = run_infer(cfg, records_uri, root, "infer-3")
    assert first.model_version == "1"

    again = run_infer(with_model(cfg, v2), records_uri, root, "infer-3")
    assert again.model_version == "2" and again.manifest["model"]["requested"] == "2"
    rows = read_parquet(store, join(root, "infer", "summaries.parquet"))
    assert {row["model_version"] for row in rows} == {"2"}
    texts = [t for _, t in sorted(dialogues())]
    assert [row["summary"] for row in rows] == expected_summaries(cfg, model_dirs[1], texts)
    assert [row["summary"] for row in rows] != expected_summaries(cfg, model_dirs[0], texts)
    assert store.get_json(join(root, "infer", "manifest.json"))["model"]["version"] == "2"

    with pytest.raises(ValueError, match="has no version 9"):
        run_infer(with_model(cfg, "9"), records_uri, root, "infer-3")


def test_version_without_complete_marker_is_refused(cfg, store, records_uri, model_dirs):
    register(cfg, store, model_dirs[0], "r1", alias="champion", complete=False)
    with pytest.raises(IncompleteModelError, match="no _COMPLETE marker"):
        run_infer(cfg, records_uri, join(store.root, "runs", "infer-4"), "infer-4")


def test_prompt_needs_its_placeholder_and_keeps_braces_in_data(cfg, store, records_uri):
    bad = cfg.model_copy(update={"infer": cfg.infer.model_copy(update={"prompt": "Summarize: {text}"})})
    with pytest.raises(ValueError, match=r"infer.prompt has no \{dialogue\} placeholder"):
        run_infer(bad, records_uri, join(store.root, "runs", "infer-5"), "infer-5")
    assert build_prompt("Summarize:\n{dialogue}\nTL;DR", "A: {summary} {dialogue}") == \
        "Summarize:\nA: {summary} {dialogue}\nTL;DR"


def test_default_prompt_is_the_summarization_eval_template():
    from components.templates.registry import load_registry

    task = load_registry()["summarization"]
    assert InferConfig().prompt == task.template(task.eval_template).inputs


def test_dataset_must_be_complete_and_unchanged(store, records_uri):
    records, version = read_dataset(store, records_uri)
    assert len(records) == N_CHATS + 1 and version == "dv-infer-1"
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        read_dataset(store, join(store.root, "datasets", "missing"))
    store.put_bytes(join(records_uri, "test.parquet"), table_bytes(pa.Table.from_pylist([], schema=RECORD_SCHEMA)))
    with pytest.raises(ValueError, match="does not match the sha256"):
        read_dataset(store, records_uri)


def test_cli_runs_the_step(cfg, store, records_uri, model_dirs, tmp_path, capsys):
    from components.infer.__main__ import main

    register(cfg, store, model_dirs[0], "r1", alias="champion")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    root = join(store.root, "runs", "infer-6")
    main(["--config", str(path), "--records-uri", records_uri, "--artifact-root", root, "--pipeline-run", "infer-6"])
    out = json.loads(capsys.readouterr().out)
    assert out["summaries_uri"] == join(root, "infer") and out["model_version"] == "1"
    assert out["counts"] == {"read": N_CHATS + 1, "summarized": N_CHATS, "skipped": 1}


def test_infer_component_compiles(tmp_path):
    from google.protobuf import json_format
    from kfp import compiler, dsl
    from kfp.pipeline_spec import pipeline_spec_pb2

    from components.infer.component import build

    op = build("registry.example/mixtune/cpu:test")

    @dsl.pipeline(name="infer-only")
    def pipe(config_json: str, pipeline_run: str, artifact_root: str):
        op(config_json=config_json, pipeline_run=pipeline_run, artifact_root=artifact_root,
           records_uri="s3://b/datasets/v1")

    out = tmp_path / "infer.yaml"
    compiler.Compiler().compile(pipe, str(out))
    doc = next(yaml.safe_load_all(out.read_text()))
    comp = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec()).components["comp-infer"]
    params = {k: v.parameter_type for k, v in comp.output_definitions.parameters.items()}
    assert params == {"summaries_uri": pipeline_spec_pb2.ParameterType.STRING,
                      "model_version": pipeline_spec_pb2.ParameterType.STRING}
    assert set(comp.input_definitions.parameters) == {"config_json", "pipeline_run", "artifact_root", "records_uri"}
    assert comp.output_definitions.artifacts["metrics"].artifact_type.schema_title == "system.Metrics"
