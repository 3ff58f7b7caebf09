"""The model side of training: build the tiny T5, load any other base, save and optimise it.

Kept free of DeepSpeed so the parent process (which only prepares the base model) stays light.
"""
from __future__ import annotations

from pathlib import Path

import torch

from components.common.config import TinyModelConfig


def build_tiny(tiny: TinyModelConfig, vocab_size: int, pad_id: int, eos_id: int, seed: int):
    """A randomly initialised T5 sized by the config, with the shards' vocabulary and special ids.

    The config's own vocab_size is ignored: the embedding must match the tokenizer the shards used.
    """
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=vocab_size,
        d_model=tiny.d_model,
        d_ff=tiny.d_ff,
        d_kv=tiny.d_kv,
        num_layers=tiny.num_layers,
        num_decoder_layers=tiny.num_decoder_layers,
        num_heads=tiny.num_heads,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        decoder_start_token_id=pad_id,  # T5 starts decoding from the pad token
        tie_word_embeddings=True,  # untied random T5 starts ~10x higher in loss (NOTES)
    )
    # Seeded so the same config always yields the same base, which evaluation scores as "untrained".
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
    return model


def base_vocab_size(path_or_id: str) -> int:
    """The embedding rows of a base model, read from its config only (no weights)."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(path_or_id).vocab_size)


def load_model(path_or_id: str):
    """Any seq2seq checkpoint: a local save_pretrained dir or a hub id, in fp32 (DeepSpeed casts for bf16)."""
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM.from_pretrained(path_or_id, dtype=torch.float32)


def save_model(model, tokenizer, out_dir: str | Path, state_dict: dict | None = None) -> Path:
    """save_pretrained as safetensors plus the tokenizer: the directory evaluation loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, state_dict=state_dict)  # transformers 5 always writes safetensors
    tokenizer.save_pretrained(out)
    if not (out / "model.safetensors").exists() and not list(out.glob("model-*.safetensors")):
        raise RuntimeError(f"{out}: save_pretrained wrote no safetensors weights")
    return out


def unwrap(model):
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (embeddings, projections); leave 1-D tensors (layer-norm scales) alone."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
