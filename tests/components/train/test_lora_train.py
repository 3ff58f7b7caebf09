"""LoRA through the whole train step: 2 CPU ranks under ZeRO-3, checkpoints without the frozen base,
and a resume that ends with exactly the weights of the uninterrupted run."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from components.common.hf import load_model
from components.common.storage import Store, join
from components.train import checkpoint
from components.train.core import run_train


def weights(store: Store, model_uri: str, tmp: Path) -> dict:
    return load_file(store.get_file(join(model_uri, "model.safetensors"), tmp / "model.safetensors"))


def test_lora_zero3_two_ranks_exports_merged_and_resumes_exactly(tiny_config, store, shards_uri, tmp_path):
    train = tiny_config.train.model_copy(update={
        "num_processes": 2, "zero_stage": 3, "max_steps": 12, "checkpoint_every": 4, "log_every": 4,
        "micro_batch_size": 4, "learning_rate": 1e-2, "reuse": False,  # the rerun below must train, not reuse
        "lora": tiny_config.train.lora.model_copy(update={"enabled": True, "r": 4, "alpha": 8})})
    cfg = tiny_config.model_copy(update={"train": train})
    root = join(store.root, "runs", "lora")
    result = run_train(cfg, shards_uri, root, "p1")
    assert result.steps == 12 and result.final_loss < result.first_loss
    out = join(root, "train")
    straight = weights(store, result.model_uri, tmp_path / "straight")

    # The export is a plain model with the adapters merged: no lora_ keys, and not the base any more.
    assert not any("lora_" in k for k in straight)
    base = weights(store, result.base_model_uri, tmp_path / "base")
    changed = [k for k in straight if not (straight[k] == base[k]).all()]
    assert changed and all(k.rsplit(".", 2)[-2] in {"q", "k", "v", "o"} for k in changed), changed
    assert load_model(result.model_uri, store).config.model_type == "t5"
    # The adapter alone, loadable by peft, next to it.
    assert store.exists(join(out, "adapter", "adapter_config.json"))
    assert store.exists(join(out, "adapter", "adapter_model.safetensors"))

    # Checkpoints hold the adapters and optimizer, not the frozen base: far smaller than the model.
    done = checkpoint.complete_checkpoints(store, join(out, "checkpoints"))
    assert [step for step, _ in done] == [4, 8]  # every 4 steps; the last step exports instead
    last = join(out, "checkpoints", done[-1][1])
    ckpt_bytes = sum(size for _, size in store.list(last))  # both ranks' module and optimizer states
    model_bytes = sum(size for _, size in store.list(result.base_model_uri))
    assert 0 < ckpt_bytes < model_bytes / 2, (ckpt_bytes, model_bytes)

    # A rerun that finds step 4 as the latest checkpoint (as if killed before 8) resumes there, exactly.
    store.delete_prefix(last)
    rerun = run_train(cfg, shards_uri, root, "p1")
    assert store.get_json(join(out, "train_log.json"))["resumed_from_step"] == 4 and rerun.steps == 12
    again = weights(store, rerun.model_uri, tmp_path / "again")
    worst = max(float((again[k] - straight[k]).abs().max()) for k in straight)
    assert worst == 0.0, f"resumed LoRA weights differ by up to {worst}"


def test_lora_bf16_export_keeps_the_fp32_base(tiny_config, store, shards_uri, tmp_path):
    """DeepSpeed bf16 casts the frozen base in place; the merged export must hold the base as loaded."""
    train = tiny_config.train.model_copy(update={
        "num_processes": 2, "zero_stage": 2, "max_steps": 6, "checkpoint_every": 0, "log_every": 3,
        "micro_batch_size": 4, "learning_rate": 1e-2, "precision": "bf16",
        "lora": tiny_config.train.lora.model_copy(update={"enabled": True, "r": 4, "alpha": 8})})
    cfg = tiny_config.model_copy(update={"train": train})
    result = run_train(cfg, shards_uri, join(store.root, "runs", "lora-bf16"), "p1")
    merged = weights(store, result.model_uri, tmp_path / "merged")
    base = weights(store, result.base_model_uri, tmp_path / "base")
    assert {t.dtype for t in merged.values()} == {torch.float32}
    untouched = [k for k in merged if k.rsplit(".", 2)[-2] not in {"q", "k", "v", "o"}]
    assert untouched and all((merged[k] == base[k]).all() for k in untouched)  # not rounded to bf16
    changed = [k for k in merged if not (merged[k] == base[k]).all()]
    assert changed and all(k.rsplit(".", 2)[-2] in {"q", "k", "v", "o"} for k in changed), changed
