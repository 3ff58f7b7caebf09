"""End-to-end train step on CPU: 2 torchrun processes, a real DeepSpeed engine, S3 + MLflow."""
from __future__ import annotations

import json
import sys
import time

import pytest
import torch
from kfp.dsl import Metrics
from mlflow.tracking import MlflowClient

from components.common.config import MixtuneConfig
from components.common.hf import load_model, load_tokenizer
from components.common.storage import Store, join
from components.common.tracking import parent_run_id
from components.train import launch
from components.train.component import train
from components.train.core import ShardChecksumError, TrainResult, run_train


def with_train(cfg: MixtuneConfig, **changes) -> MixtuneConfig:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=changes)})


def check_run(cfg: MixtuneConfig, store: Store, artifact_root: str, result, steps: int) -> None:
    out = join(artifact_root, "train")
    assert result.model_uri == join(out, "model")
    assert store.exists(join(result.model_uri, "_COMPLETE"))
    assert store.exists(join(result.model_uri, "model.safetensors"))
    assert result.steps == steps
    assert result.final_loss < result.first_loss, (result.first_loss, result.final_loss)
    assert result.tokens_seen > 0 and result.tokens_per_second > 0
    log = store.get_json(join(out, "train_log.json"))
    assert log["history"][0]["step"] == 1 and log["history"][-1]["step"] == steps
    assert store.get_json(join(out, "deepspeed_config.json"))["zero_optimization"]["stage"] == cfg.train.zero_stage

    model = load_model(result.model_uri, store)  # from_pretrained, safetensors only
    tokenizer = load_tokenizer(result.model_uri, store)
    assert model.config.vocab_size == len(tokenizer)
    assert result.base_model_uri == join(out, "base_model")
    assert store.exists(join(result.base_model_uri, "model.safetensors"))
    assert store.exists(join(result.base_model_uri, "_COMPLETE"))

    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent_run_id(cfg, "p1")
    assert run.data.tags["mixtune.dataset_version"].startswith("test-")
    assert run.data.params["train.zero_stage"] == str(cfg.train.zero_stage)
    assert run.data.params["device"] == "cpu"
    assert run.data.metrics["final_loss"] == pytest.approx(result.final_loss)
    losses = client.get_metric_history(result.mlflow_run_id, "loss")
    assert [m.step for m in losses] == [e["step"] for e in log["history"]]
    assert len(client.get_metric_history(result.mlflow_run_id, "lr")) == len(losses)
    # model FLOPs (components/train/flops.py) per device, and MFU where a peak is known
    assert log["model_tflops_per_device"] > 0
    assert run.data.metrics["model_tflops_per_device"] == pytest.approx(log["model_tflops_per_device"])
    assert len(client.get_metric_history(result.mlflow_run_id, "window_model_tflops_per_device")) == len(losses)
    if cfg.train.peak_tflops:
        assert log["mfu"] == pytest.approx(log["model_tflops_per_device"] / cfg.train.peak_tflops)
        assert run.data.metrics["mfu"] == pytest.approx(log["mfu"])
    else:  # no standard peak for a CPU
        assert log["mfu"] is None and "mfu" not in run.data.metrics
    shards = join(f"s3://{cfg.storage.bucket}", cfg.storage.prefix, "runs", "r1", "shards")
    assert run.inputs.dataset_inputs[0].dataset.source == json.dumps({"uri": shards})


def test_zero2_two_processes(tiny_config, store, shards_uri, tmp_path, monkeypatch):
    cfg = with_train(tiny_config, num_processes=2, zero_stage=2, max_steps=30, log_every=5)
    # A relative sqlite URI (as in local runs) must reach the same database from every rank.
    monkeypatch.chdir(tmp_path)
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": "sqlite:///rel/mlflow.db"})})
    (tmp_path / "rel").mkdir()
    root = join(store.root, "runs", "r1")
    started = time.time()
    result = run_train(cfg, shards_uri, root, "p1")
    print(f"zero2 run_train wall {time.time() - started:.1f}s, train {result.train_seconds:.1f}s, "
          f"loss {result.first_loss:.3f} -> {result.final_loss:.3f}", file=sys.stderr)
    check_run(cfg, store, root, result, 30)


def test_packed_rows_zero3_two_processes(tiny_config, store, shards_uri):
    """Packing through the real engine: several examples per row, ZeRO-3 partitioned parameters."""
    cfg = with_train(tiny_config, num_processes=2, zero_stage=3, max_steps=20, log_every=5, packing=True,
                     micro_batch_size=2)
    root = join(store.root, "runs", "r1")
    result = run_train(cfg, shards_uri, root, "p1")
    check_run(cfg, store, root, result, 20)
    padded = run_train(with_train(cfg, packing=False), shards_uri, join(store.root, "runs", "r2"), "p1")
    # Same micro-batch count, but each packed row holds several examples: more real tokens per step.
    assert result.tokens_seen > 1.2 * padded.tokens_seen


def test_zero3_bf16_grad_accumulation_through_the_component(tiny_config, store, shards_uri, tmp_path):
    cfg = with_train(tiny_config, num_processes=2, zero_stage=3, max_steps=20, log_every=5, precision="bf16",
                     gradient_accumulation_steps=2, micro_batch_size=4, peak_tflops=0.5)
    root = join(store.root, "runs", "r1")
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    # The KFP component's body, called as KFP's executor would (config passed as JSON).
    out = train(config_json=cfg.model_dump_json(), pipeline_run="p1", artifact_root=root, shards_uri=shards_uri,
                metrics=metrics)
    m = metrics.metadata
    result = TrainResult(model_uri=out.model_uri, base_model_uri=out.base_model_uri, mlflow_run_id=out.mlflow_run_id,
                         steps=int(m["steps"]), final_loss=m["final_loss"], first_loss=m["first_loss"],
                         train_seconds=m["train_seconds"], tokens_seen=int(m["tokens_seen"]),
                         tokens_per_second=m["tokens_per_second"])
    check_run(cfg, store, root, result, 20)
    assert store.get_json(join(root, "train", "deepspeed_config.json"))["bf16"] == {"enabled": True}
    # The export is the optimizer's fp32 masters (gathered from ZeRO-3 partitions), not the module's bf16
    # copies: fp32 tensors, most of whose values a bf16 number could not hold.
    from safetensors.torch import load_file

    weights = load_file(store.get_file(join(result.model_uri, "model.safetensors"), tmp_path / "w.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    q = weights["encoder.block.0.layer.0.SelfAttention.q.weight"]
    assert (q != q.bfloat16().float()).float().mean() > 0.9
    assert load_model(result.model_uri, store).dtype == torch.float32  # the config says fp32 too


def test_checksum_mismatch_names_the_shard(tiny_config, store, shards_uri):
    manifest = store.get_json(join(shards_uri, "manifest.json"))
    bad = manifest["splits"]["train"]["shards"][1]["uri"]
    store.put_bytes(bad, store.get_bytes(bad) + b"tampered")
    with pytest.raises(ShardChecksumError, match=bad.replace(".", r"\.")):
        run_train(tiny_config, shards_uri, join(store.root, "runs", "r1"), "p1")


def test_missing_manifest_is_a_clear_error(tiny_config, store):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        run_train(tiny_config, join(store.root, "nowhere"), join(store.root, "runs", "r1"), "p1")


def test_worker_failure_reports_exit_code_and_log(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import os, sys\nprint('rank', os.environ['RANK'], 'giving up')\nsys.exit(3)\n")
    with pytest.raises(launch.WorkerFailed, match="exit code 3") as err:
        launch.launch([str(script)], 2, "cpu", tmp_path / "train.log", echo=False)
    assert "giving up" in err.value.tail


def test_failing_worker_fails_the_step_with_its_log(tiny_config, store, shards_uri, tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 7}}))  # DeepSpeed rejects it in every rank
    cfg = with_train(tiny_config, num_processes=2, deepspeed_config=str(bad))
    with pytest.raises(launch.WorkerFailed) as err:
        run_train(cfg, shards_uri, join(store.root, "runs", "r1"), "p1")
    assert err.value.worker_exit_code != 0 and "zero" in err.value.tail.lower()
    client = MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id], "tags.`mixtune.step` = 'train'")
    assert run.info.status == "FAILED"
    assert "train.log" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert not store.exists(join(store.root, "runs", "r1", "train", "model", "_COMPLETE"))
