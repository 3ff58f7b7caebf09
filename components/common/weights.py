"""Load a model directory, safetensors only: the one loader every consumer of a model shares (the
steps through hf.py, and the registered MLflow model, which ships this file with it).

A directory holding only pickled weights (pytorch_model.bin, *.pt) is refused before anything reads
it, since unpickling runs whatever code the pickle names. Depends on transformers only, so it can
travel inside an MLflow model without the rest of mixtune.
"""
from __future__ import annotations

from pathlib import Path

# The weight files a save_pretrained directory in safetensors has (one file, or shards and their index).
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def require_safetensors(path: str, ref: str | None = None) -> None:
    """Refuse a local model directory without safetensors weights (a hub id, not a directory, is left to
    from_pretrained(use_safetensors=True), which refuses a repository without them)."""
    directory = Path(path)
    if not directory.is_dir() or any((directory / name).is_file() for name in SAFE_WEIGHTS):
        return
    pickles = sorted(f.name for f in directory.iterdir() if f.suffix in PICKLE_SUFFIXES)
    where = f"{ref} (local copy {directory})" if ref and ref != str(path) else str(directory)
    raise ValueError(
        f"{where}: no safetensors weights ({' or '.join(SAFE_WEIGHTS)}); "
        + (f"found only pickled weights {pickles}, which mixtune never loads (unpickling runs code)"
           if pickles else "found no weights at all")
        + ": re-save the model with save_pretrained(safe_serialization=True)")


def load_local_model(path: str, ref: str | None = None):
    """A seq2seq or decoder-only model from a local directory (or hub id), as its config says."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    require_safetensors(path, ref)
    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
    return auto.from_pretrained(path, use_safetensors=True)
