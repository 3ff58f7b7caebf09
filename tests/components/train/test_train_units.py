"""Fast checks of the train step's pieces: DeepSpeed config, sampling, padding, KFP component.

No `from __future__ import annotations` here: KFP reads the pipeline function's annotations as types.
"""

import json

import pytest

from components.common.config import TinyModelConfig, TrainConfig
from components.train import model as model_lib
from components.train.batches import collate
from components.train.core import deepspeed_config, effective_deepspeed_config
from components.train.worker import step_seed


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_config_carries_the_train_config(stage):
    tc = TrainConfig(zero_stage=stage, micro_batch_size=4, gradient_accumulation_steps=3, gradient_clipping=0.5,
                     max_steps=100, warmup_steps=10, learning_rate=1e-3)
    ds = deepspeed_config(tc, "cpu")
    assert ds["zero_optimization"] == {"stage": stage}
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 3
    assert ds["gradient_clipping"] == 0.5
    assert "optimizer" not in ds  # a config optimizer would compile fused Adam; the worker passes AdamW
    sched = ds["scheduler"]["params"]
    assert ds["scheduler"]["type"] == "WarmupDecayLR"
    assert (sched["warmup_num_steps"], sched["total_num_steps"], sched["warmup_max_lr"]) == (10, 100, 1e-3)
    json.dumps(ds)  # it is written to S3 and MLflow as JSON


@pytest.mark.parametrize("precision,device,bf16", [
    ("auto", "cpu", False), ("fp32", "cpu", False), ("bf16", "cpu", True),
    ("auto", "cuda", True), ("fp32", "cuda", False), ("bf16", "cuda", True),
])
def test_precision_choice(precision, device, bf16):
    assert deepspeed_config(TrainConfig(precision=precision), device)["bf16"] == {"enabled": bf16}


def test_warmup_never_exceeds_total_steps():
    sched = deepspeed_config(TrainConfig(max_steps=5, warmup_steps=30), "cpu")["scheduler"]["params"]
    assert sched["warmup_num_steps"] == 5


def test_deepspeed_config_file_overrides_and_fills_auto(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 1}}))
    ds = effective_deepspeed_config(TrainConfig(deepspeed_config=str(path), micro_batch_size=6,
                                                gradient_accumulation_steps=2, zero_stage=3), "cpu")
    assert ds == {"train_micro_batch_size_per_gpu": 6, "gradient_accumulation_steps": 2,
                  "zero_optimization": {"stage": 1}}
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="top level must be an object"):
        effective_deepspeed_config(TrainConfig(deepspeed_config=str(path)), "cpu")


def test_step_seed_depends_on_seed_rank_and_step_only():
    seeds = {step_seed(42, r, s) for r in range(2) for s in range(50)}
    assert len(seeds) == 100 and all(0 <= x < 2**63 for x in seeds)
    assert step_seed(42, 1, 7) == step_seed(42, 1, 7) != step_seed(43, 1, 7)


def test_collate_pads_dynamically():
    batch = collate([([5, 6, 1], [7, 1]), ([5, 1], [8, 9, 10, 1])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 1], [5, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[7, 1, -100, -100], [8, 9, 10, 1]]


def test_tiny_model_is_seeded_and_uses_the_manifest_vocab(tmp_path):
    tiny = TinyModelConfig(d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1)
    a = model_lib.build_tiny(tiny, vocab_size=321, pad_id=0, eos_id=1, seed=3)
    b = model_lib.build_tiny(tiny, vocab_size=321, pad_id=0, eos_id=1, seed=3)
    assert a.config.vocab_size == 321 and a.config.decoder_start_token_id == 0
    assert a.config.tie_word_embeddings
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters()))


def test_component_compiles(tmp_path):
    from kfp import compiler, dsl

    from components.train.component import build

    train_op = build("mixtune/train-cuda:test")

    @dsl.pipeline(name="train-only")
    def pipeline(config_json: str, shards_uri: str):
        train_op(config_json=config_json, pipeline_run="p", artifact_root="s3://b/r", shards_uri=shards_uri)

    out = tmp_path / "train.yaml"
    compiler.Compiler().compile(pipeline, str(out))
    text = out.read_text()
    assert "mixtune/train-cuda:test" in text and "run_train" in text
    for output in ("model_uri", "base_model_uri", "mlflow_run_id", "metrics"):
        assert output in text


def _manifest(sha: str = "a" * 64, where: str = "runs/one") -> dict:
    shard = {"uri": f"s3://b/{where}/shards/train/s-0.parquet", "sha256": sha, "rows": 10, "stream": "sum"}
    return {"dataset_version": "v1", "vocab_size": 600, "pad_token_id": 0, "eos_token_id": 1,
            "tokenizer_uri": f"s3://b/{where}/shards/tokenizer", "tokenize": {"seconds": 1.0},
            "splits": {"train": {"shards": [shard]}}}


def test_train_key_follows_content_not_location_or_scheduling():
    from components.common.config import parse_config
    from components.train.core import train_key

    cfg = parse_config({})
    key = train_key(cfg, _manifest())
    assert key == train_key(cfg, _manifest(where="runs/two"))  # same bytes elsewhere: same model
    assert key != train_key(cfg, _manifest(sha="b" * 64))  # other bytes: train again
    moved = cfg.model_copy(update={"train": cfg.train.model_copy(update={"checkpoint_every": 7, "reuse": False})})
    assert key == train_key(moved, _manifest())  # where and how often it checkpoints: same weights
    lr = cfg.model_copy(update={"train": cfg.train.model_copy(update={"learning_rate": 1e-2})})
    assert key != train_key(lr, _manifest())


def test_the_base_comes_from_the_version_the_shards_step_pinned():
    """models:/<name>@champion is resolved once, by shards; train loads that version even if the alias moved,
    and refuses shards tokenized for another base or written without the pin."""
    from components.common.config import parse_config
    from components.train.core import pinned_base, train_key

    ref = "models:/summarizer@champion"
    cfg = parse_config({"model": {"base": ref}})
    pin = {"ref": ref, "uri": "s3://b/runs/r1/train/model", "registered_model": "summarizer", "version": "3"}
    assert pinned_base(cfg, {**_manifest(), "base_model": pin}) == pin
    with pytest.raises(ValueError, match="does not say which version the shards step resolved"):
        pinned_base(cfg, _manifest())
    with pytest.raises(ValueError, match="tokenized for 'models:/summarizer/2'"):
        pinned_base(cfg, {**_manifest(), "base_model": {**pin, "ref": "models:/summarizer/2"}})
    s3 = parse_config({"model": {"base": "s3://b/runs/r0/train/model"}})
    assert pinned_base(s3, _manifest())["uri"] == "s3://b/runs/r0/train/model"  # older manifests, fixed refs
    # The reuse key sees the version, not the alias: a moved champion trains again.
    later = {**pin, "uri": "s3://b/runs/r2/train/model", "version": "4"}
    assert train_key(cfg, {**_manifest(), "base_model": pin}) != train_key(cfg, {**_manifest(), "base_model": later})
