"""The end of a training run: the consolidated model in safetensors, uploaded, then its marker.

Under ZeRO-3 the weights are partitioned across ranks, so every rank takes part in gathering them and
rank 0 writes. Under bf16 the module holds bf16 copies and the optimizer the fp32 masters: the export
is the masters (with LoRA, the adapters merged onto the fp32 base as loaded), so a model retrained
round after round is not rounded to bf16 each time.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from components.common.config import MixtuneConfig
from components.common.storage import COMPLETE_MARKER, Store, join
from components.train import model as model_lib


def fp32_masters(engine) -> dict[str, torch.Tensor]:
    """The optimizer's fp32 master copy of each trained weight (CPU), by parameter name; empty when
    training was fp32. Under bf16 the module holds bf16 copies: exporting those would round every
    weight, and every retraining round of the champion would round again. A collective: every rank
    calls it (ZeRO 1-3 partition the masters)."""
    if not engine.bfloat16_enabled():
        return {}
    from deepspeed.utils import safe_get_full_fp32_param

    out = {}
    for name, p in engine.module.named_parameters():
        full = safe_get_full_fp32_param(p) if p.requires_grad else None
        if full is not None:
            out[name] = full.detach().float().cpu()
    return out


def with_masters(module, masters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """module.state_dict() with every trained weight replaced by its fp32 master; tied names (T5's
    shared / embed_tokens / lm_head) share one tensor, as save_pretrained expects. None = no masters."""
    if not masters:
        return None
    by_storage = {p.data_ptr(): masters[n] for n, p in module.named_parameters() if n in masters}
    return {k: by_storage.get(v.data_ptr(), v).detach().cpu() for k, v in module.state_dict().items()}


def save_and_upload(engine, job: dict, cfg: MixtuneConfig, rank: int, model_path: str, tokenizer_path: str,
                    work: Path, result: dict) -> None:
    """Consolidate the weights (ZeRO-3 shards them across ranks), save on rank 0, upload, mark done.
    Under bf16 the export is the fp32 masters (and, with LoRA, the base as loaded), in an fp32 config."""
    import deepspeed
    from transformers import AutoTokenizer

    out = job["output_uri"]
    model_dir = work / "model"
    masters = fp32_masters(engine)
    params = list(engine.module.parameters())
    gather = engine.zero_optimization_stage() == 3
    # Every rank must enter the gather (it is a collective); only rank 0 writes.
    lora_on = cfg.train.lora.enabled
    merged = adapter = None
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=gather):
        if rank == 0:
            if lora_on:  # merged copies, so this works with ZeRO-3's gathered parameters too
                from components.train import lora

                # DeepSpeed bf16 cast the frozen base in place: merge onto the fp32 base as loaded.
                base = (model_lib.load_model(model_path, job.get("architecture", "seq2seq")).state_dict()
                        if masters else None)
                merged = lora.merged_state_dict(engine.module, base, masters)
                adapter = lora.adapter_state(engine.module, masters)
            else:
                model_lib.save_model(engine.module, AutoTokenizer.from_pretrained(tokenizer_path), model_dir,
                                     state_dict=with_masters(engine.module, masters))
    if rank == 0 and lora_on:
        model_lib.save_model(engine.module.get_base_model(), AutoTokenizer.from_pretrained(tokenizer_path),
                             model_dir, state_dict=merged)
        lora.save_adapter(engine.module, work / "adapter", state_dict=adapter)
    if rank != 0:
        return
    store = Store(cfg.storage)
    if cfg.train.lora.enabled:
        store.upload_dir(work / "adapter", join(out, "adapter"))
    store.upload_dir(model_dir, join(out, "model"))
    store.put_bytes(join(out, "train_log.json"), json.dumps(result, indent=2).encode())
    store.put_json(join(out, "model", COMPLETE_MARKER), {"steps": result["steps"], "final_loss": result["final_loss"]})
