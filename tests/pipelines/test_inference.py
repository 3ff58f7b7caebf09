"""The inference pipeline (ingest -> infer): its compiled spec, and a kfp.local run against the real
SeaweedFS and SQLite MLflow fixtures with a tiny champion in the registry."""
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from mlflow.tracking import MlflowClient

from components.common.config import load_config
from components.common.schemas import read_rows
from components.common.storage import join
from components.common.tracking import MODEL_URI_TAG, setup
from pipelines.inference import compile_inference, print_inference_summary, run_local


def test_inference_pipeline_compiles_to_ingest_then_infer(tmp_path):
    cfg = load_config(None, {"images.cpu": "reg.example/mixtune/cpu:1.2"})
    path = compile_inference(cfg, str(tmp_path / "infer.yaml"))
    doc = next(yaml.safe_load_all(open(path)))
    spec = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = spec.root.dag.tasks
    assert sorted(tasks) == ["infer", "ingest"]
    assert list(tasks["infer"].dependent_tasks) == ["ingest"]
    # Both read state KFP cannot see (the bucket, the registry's aliases): never served from cache.
    assert not tasks["ingest"].caching_options.enable_cache and not tasks["infer"].caching_options.enable_cache
    assert set(spec.root.input_definitions.parameters) == {"config_json", "pipeline_run", "artifact_root"}
    images = {e["container"]["image"] for e in doc["deploymentSpec"]["executors"].values()}
    assert images == {"reg.example/mixtune/cpu:1.2"}


def register_tiny_champion(cfg, store, tmp_path) -> str:
    """A tiny random T5 with a tokenizer trained on sample chats, registered with alias champion."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from components.shards.tokenizer import train_unigram
    from pipelines.sample_data import generate

    tok = train_unigram(["\n".join(m["content"] for m in c["messages"]) for c in generate(30, seed=5)], 300)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id))
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    uri = join(store.root, "runs", "train-run", "train", "model")
    store.upload_dir(tmp_path / "model", uri)
    store.put_bytes(join(uri, "_COMPLETE"), b"")
    setup(cfg)
    client, name = MlflowClient(), cfg.registry.model_name
    client.create_registered_model(name)
    version = client.create_model_version(name, source=uri, tags={MODEL_URI_TAG: uri}).version
    client.set_registered_model_alias(name, "champion", version)
    return str(version)


def test_inference_pipeline_runs_locally(tiny_config, store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MIXTUNE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config.model_copy(update={
        "data": tiny_config.data.model_copy(update={
            "sample": tiny_config.data.sample.model_copy(update={"conversations": 30, "broken_rows": 2})}),
        "infer": tiny_config.infer.model_copy(update={"batch_size": 8}),
        "generation": tiny_config.generation.model_copy(update={"max_new_tokens": 8}),
    })
    version = register_tiny_champion(cfg, store, tmp_path)

    summary = run_local(cfg, tmp_path / "work", embedded_s3=False, pipeline_run="infer-local-1")

    assert summary["model"]["version"] == version and summary["model"]["requested"] == "champion"
    ingest, counts = summary["ingest"], summary["counts"]
    assert ingest["rows_quarantined"] == 2  # the broken rows, quarantined by ingest
    # Every kept record is read by infer; the sample chats all have a dialogue.
    assert counts["read"] == ingest["rows_kept"] and counts == {"read": counts["read"], "summarized": counts["read"],
                                                                 "skipped": 0}
    rows = read_rows(store, summary["summaries_uri"])
    assert len(rows) == counts["summarized"] and {r["model_version"] for r in rows} == {version}
    assert summary["artifact_root"] == join(store.root, "runs", "infer-local-1")
    capsys.readouterr()
    print_inference_summary(summary)
    printed = capsys.readouterr().out
    assert f"v{version} (champion)" in printed and "quarantine: " in printed and rows[0]["id"] in printed

    client = MlflowClient(cfg.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id],
                              "tags.`mixtune.pipeline_run` = 'infer-local-1'")
    roles = sorted((r.data.tags.get("mixtune.role"), r.data.tags.get("mixtune.step")) for r in runs)
    assert roles == [("pipeline", None), ("step", "infer"), ("step", "ingest")]
    assert all(r.info.status == "FINISHED" for r in runs)
