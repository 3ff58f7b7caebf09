"""The model side of training: build a tiny model, load any other base, save and optimise it.

Two architectures: seq2seq (encoder-decoder, T5) and causal (decoder-only; the tiny one is
Llama-shaped: RoPE, RMSNorm, SwiGLU, as most current decoders are).

Kept free of DeepSpeed so the parent process (which only prepares the base model) stays light.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from components.common.config import TinyModelConfig


def build_tiny(tiny: TinyModelConfig, vocab_size: int, pad_id: int, eos_id: int, seed: int,
               architecture: str = "seq2seq", max_positions: int = 512):
    """A randomly initialised model sized by the config, with the shards' vocabulary and special ids.

    The config's own vocab_size is ignored: the embedding must match the tokenizer the shards used.
    """
    if architecture == "causal":
        return _seeded(seed, lambda: _tiny_decoder(tiny, vocab_size, pad_id, eos_id, max_positions))
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=vocab_size,
        d_model=tiny.d_model,
        d_ff=tiny.d_ff,
        d_kv=tiny.d_kv,
        num_layers=tiny.num_layers,
        num_decoder_layers=tiny.num_decoder_layers,
        num_heads=tiny.num_heads,
        dropout_rate=tiny.dropout_rate,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        decoder_start_token_id=pad_id,  # T5 starts decoding from the pad token
        tie_word_embeddings=True,  # untied random T5 starts ~10x higher in loss (NOTES)
    )
    return _seeded(seed, lambda: T5ForConditionalGeneration(config))


def _tiny_decoder(tiny: TinyModelConfig, vocab_size: int, pad_id: int, eos_id: int, max_positions: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=tiny.d_model, intermediate_size=tiny.d_ff,
        num_hidden_layers=tiny.num_layers + tiny.num_decoder_layers,  # the T5's depth, in one stack
        num_attention_heads=tiny.num_heads, num_key_value_heads=tiny.num_heads,
        head_dim=tiny.d_model // tiny.num_heads, max_position_embeddings=max_positions,
        pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=None,  # the tiny tokenizer has no BOS
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _seeded(seed: int, build):
    # Seeded so the same config always yields the same base, which evaluation scores as "untrained".
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return build()


def resolve_architecture(architecture: str, base: str) -> str:
    """model.architecture with "auto" decided: 'tiny' is seq2seq, any other base by its config."""
    if architecture != "auto":
        return architecture
    if base == "tiny":
        return "seq2seq"
    from transformers import AutoConfig

    return "seq2seq" if AutoConfig.from_pretrained(base).is_encoder_decoder else "causal"


def base_vocab_size(path_or_id: str) -> int:
    """The embedding rows of a base model, read from its config only (no weights)."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(path_or_id).vocab_size)


def load_model(path_or_id: str, architecture: str = "seq2seq"):
    """A seq2seq or causal checkpoint: a local save_pretrained dir or a hub id, in fp32 (DeepSpeed casts
    for bf16). Safetensors weights only: a directory (or hub repository) with only pickled weights is refused."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from components.common.weights import require_safetensors

    require_safetensors(path_or_id)
    auto = AutoModelForCausalLM if architecture == "causal" else AutoModelForSeq2SeqLM
    return auto.from_pretrained(path_or_id, dtype=torch.float32, use_safetensors=True)


def save_model(model, tokenizer, out_dir: str | Path, state_dict: dict | None = None) -> Path:
    """save_pretrained as safetensors plus the tokenizer: the directory evaluation loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, state_dict=state_dict)  # transformers 5 always writes safetensors
    dtypes = {t.dtype for t in (state_dict or {}).values() if t.is_floating_point()}
    if len(dtypes) == 1:  # save_pretrained writes the module's dtype; from_pretrained loads the config's
        config = json.loads((out / "config.json").read_text())
        config["dtype"] = str(dtypes.pop()).removeprefix("torch.")
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
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
