"""Low-rank adapters (PEFT LoRA) on a seq2seq or causal model, and the exports that make them disappear.

Training with `train.lora.enabled` wraps the base model in adapters; only the adapters train. The
exported model has them merged, so evaluation and registration load it with
`from_pretrained` exactly like a full fine-tune. The adapter alone (a few MB)
can be saved next to it.

DeepSpeed: the peft model is what the worker hands to `deepspeed.initialize`, and `engine.module` is
that peft model. Under ZeRO 0-2 every rank holds whole weights, so any function here works on
`engine.module` as it is. Under ZeRO-3 the weights are partitioned: call `merged_state_dict` (and
`adapter_state`) inside `deepspeed.zero.GatheredParameters(list(engine.module.parameters()),
modifier_rank=None)` on every rank (the gather is a collective), use the result on rank 0 only, and
never call `merged_for_export` there (it rewrites modules that ZeRO-3 has hooked).
"""
from __future__ import annotations

from pathlib import Path

import torch

from components.common.config import LoraConfig

# Module types LoRA can adapt; other modules are left out of the "what exists" list in errors.
_ADAPTABLE = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)


def adaptable_suffixes(model: torch.nn.Module) -> list[str]:
    """Last name components of the modules LoRA could adapt (T5: q, k, v, o, wi, wo, lm_head, ...)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if name and isinstance(module, _ADAPTABLE)})


def _matches(name: str, target: str) -> bool:
    # peft's own rule for a list of target_modules: the full name, or its ending after a dot.
    return name == target or name.endswith("." + target)


def check_target_modules(model: torch.nn.Module, targets: list[str]) -> None:
    """Every target must name at least one module: a typo must not silently adapt fewer layers."""
    names = [name for name, module in model.named_modules() if isinstance(module, _ADAPTABLE)]
    missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        raise ValueError(
            f"train.lora.target_modules {missing} match no module of {type(model).__name__}; "
            f"module names that exist: {adaptable_suffixes(model)}")


# The attention projections, by naming family: T5's, then the Llama/Mistral/Qwen/Gemma decoders'.
DEFAULT_TARGETS = (["q", "k", "v", "o"], ["q_proj", "k_proj", "v_proj", "o_proj"])


def default_targets(model: torch.nn.Module) -> list[str]:
    suffixes = set(adaptable_suffixes(model))
    for names in DEFAULT_TARGETS:
        if set(names) <= suffixes:
            return list(names)
    raise ValueError(f"train.lora.target_modules is not set and {type(model).__name__} has no attention "
                     f"projections named {' or '.join(map(str, DEFAULT_TARGETS))}; name the modules to adapt "
                     f"from: {adaptable_suffixes(model)}")


def apply_lora(model: torch.nn.Module, lora: LoraConfig):
    """Wrap a model in LoRA adapters; the base weights are frozen, only the adapters train."""
    from peft import LoraConfig as PeftLoraConfig, TaskType, get_peft_model

    if lora.target_modules is not None and not lora.target_modules:
        raise ValueError("train.lora.target_modules is empty: name the modules to adapt (T5: q, k, v, o, wi, wo)")
    targets = list(lora.target_modules) if lora.target_modules else default_targets(model)
    check_target_modules(model, targets)
    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    config = PeftLoraConfig(task_type=task, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=targets, bias="none")
    return get_peft_model(model, config)


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _numel(p: torch.nn.Parameter) -> int:
    # ZeRO-3 leaves an empty placeholder on each rank and keeps the real size in ds_numel.
    return int(getattr(p, "ds_numel", p.numel()))


def trainable_summary(model: torch.nn.Module) -> dict:
    """Parameters that train vs all parameters (shared tensors counted once)."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = _numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}


def merged_state_dict(model, base_weights: dict[str, torch.Tensor] | None = None,
                      masters: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The base model's state dict (CPU copies) in plain transformers names, with every adapter added
    into its layer's weight. Leaves the model untouched, so it is safe inside ZeRO-3's
    GatheredParameters; save it with `model.get_base_model().save_pretrained(dir, state_dict=...)`
    (model_lib.save_model(model.get_base_model(), tokenizer, dir, state_dict=...)).

    base_weights: the base as loaded (plain names), used instead of the module's copy, which DeepSpeed
    bf16 rounded; masters: fp32 adapter weights by the peft model's parameter names (export.fp32_masters)."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple]] = set()
    for key, tensor in base.state_dict().items():
        if ".lora_" in key:  # lora_A / lora_B / lora_dropout state: folded in below
            continue
        # Tied weights (T5's shared/embed_tokens/lm_head) come once, under their first name, as
        # save_pretrained writes them: copies would no longer look tied and be saved three times.
        if tensor.numel() and (tensor.data_ptr(), tuple(tensor.shape)) in seen:
            continue
        seen.add((tensor.data_ptr(), tuple(tensor.shape)))
        plain = key.replace(".base_layer.", ".")
        source = base_weights[plain] if base_weights is not None and plain in base_weights else tensor
        merged[plain] = source.detach().to("cpu", copy=True)
    for name, layer in base.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        if layer.lora_variant or any(layer.lora_bias.values()):
            raise NotImplementedError(f"{name}: only plain LoRA adapters can be merged here")
        key = f"{name}.weight"
        weight = merged[key].float()  # add in fp32: a bf16 sum would round the small deltas away
        for adapter in layer.active_adapters:
            if adapter in layer.lora_A and adapter not in layer.merged_adapters:
                weight += _delta(model, name, layer, adapter, masters or {})
        merged[key] = weight.to(merged[key].dtype)
    return merged


def _delta(model, name: str, layer, adapter: str, masters: dict[str, torch.Tensor]) -> torch.Tensor:
    """B @ A x scaling in fp32, from the fp32 masters when there are (peft would multiply bf16 copies)."""
    prefix = f"base_model.model.{name}"
    a, b = (masters.get(f"{prefix}.lora_{x}.{adapter}.weight") for x in ("A", "B"))
    if a is None or b is None:
        return layer.get_delta_weight(adapter).detach().float().cpu()
    delta = (b @ a) * layer.scaling[adapter]
    return delta.T if layer.fan_in_fan_out else delta  # GPT-2's Conv1D stores weights transposed


def merged_for_export(model):
    """The plain transformers model with the adapters merged in (peft's merge_and_unload).

    Modifies the model in place (its LoRA layers are replaced), so call it once, after training.
    ZeRO 0-2 only; under ZeRO-3 use merged_state_dict inside a parameter gather."""
    return model.merge_and_unload()


def adapter_state(model, masters: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter weights alone (CPU copies), named as in the peft model's own state_dict: the subset
    that `save_adapter(model, dir, state_dict=...)` writes; fp32 masters where given. Take it inside
    the gather under ZeRO-3."""
    masters = masters or {}
    return {k: masters.get(k, v).detach().cpu().clone() for k, v in model.state_dict().items() if ".lora_" in k}


def save_adapter(model, out_dir: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """adapter_config.json + adapter_model.safetensors; loads back with PeftModel.from_pretrained(base, dir).

    Under ZeRO-3 pass state_dict=adapter_state(model), taken inside a parameter gather."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
    if not (out / "adapter_model.safetensors").exists():
        raise RuntimeError(f"{out}: save_pretrained wrote no adapter_model.safetensors")
    return out
