"""Load Hugging Face models and tokenizers from S3 URIs, local paths or hub ids.

A model or tokenizer written by a step is a `save_pretrained` directory in S3; it is copied into
a local cache keyed by its URI and its objects' ETags, and loaded from there. Only safetensors
weights are accepted: a directory holding only pickled weights (pytorch_model.bin, *.pt) is refused
before anything reads it, since unpickling runs whatever code the pickle names.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from components.common.config import MODELS_SCHEME, parse_models_uri
from components.common.storage import Store


def cache_dir() -> Path:
    return Path(os.environ.get("MIXTUNE_CACHE", Path.home() / ".cache" / "mixtune"))


def local_copy(ref: str, store: Store) -> str:
    """A local path for ref: s3:// prefixes are downloaded once into the cache; a registered version
    (models:/<name>/<version>, or an alias resolved now) through the registry."""
    if ref.startswith(MODELS_SCHEME):
        from components.common.registry import resolve

        name, which = parse_models_uri(ref)
        found = resolve(name, which, cache_dir() / "registry" / name)
        if found is None:
            raise ValueError(f"{ref}: registered model {name!r} has no alias {which!r}")
        return local_copy(found.uri, store)
    if not ref.startswith("s3://"):
        return ref
    # Keyed by what is there now (keys, sizes, ETags), not only by the prefix: a prefix written again
    # (a retried train step, a test rerun) must not be served from an older download.
    listing = json.dumps([ref, [[uri, size, etag] for uri, size, etag in store.list_meta(ref)]])
    target = cache_dir() / "objects" / hashlib.sha256(listing.encode()).hexdigest()[:24]
    done = target / ".complete"
    if not done.exists():
        store.download_dir(ref, target)
        done.touch()
    return str(target)


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


def load_tokenizer(ref: str, store: Store):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(local_copy(ref, store))


def load_model(ref: str, store: Store):
    """A model a step wrote (or a base): seq2seq or decoder-only, as its config says."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    path = local_copy(ref, store)
    require_safetensors(path, ref)
    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
    return auto.from_pretrained(path, use_safetensors=True)
