"""Load Hugging Face models and tokenizers from S3 URIs, local paths or hub ids.

A model or tokenizer written by a step is a `save_pretrained` directory in S3; it is copied into
a local cache keyed by its URI and its objects' ETags, and loaded from there. Only safetensors
weights are accepted (components/common/weights.py).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from components.common.config import MODELS_SCHEME, parse_models_uri
from components.common.storage import Store
from components.common.weights import load_local_model


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


def load_tokenizer(ref: str, store: Store):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(local_copy(ref, store))


def load_model(ref: str, store: Store):
    """A model a step wrote (or a base): seq2seq or decoder-only, as its config says; safetensors only."""
    return load_local_model(local_copy(ref, store), ref)
