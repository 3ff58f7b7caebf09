"""Shards core: tokenize every split, streaming and in parallel, into per-stream Parquet shards.

Layout under <artifact_root>/shards (format_version 2):
  tokenizer/                                   save_pretrained output
  <split>/<stream dir>/shard-NNNNN.parquet     id, task, input_ids, labels (unpadded, ending with </s>)
  manifest.json                                written last: its presence means complete
A stream is a task ("T") or its replayed examples ("replay/T"); the stream dir replaces "/" by "__".

How the work is split. The core is two functions a cluster fans out with a KFP ParallelFor:
`tokenize_partition` (one row range of a split -> its shards + a partial manifest) and
`merge_manifests` (partials -> manifest). On one machine, this step runs each
split as ONE partition whose record batches go through a process pool (ordered, bounded map), rather
than many partitions side by side: every stream then gets full shards and a single short last one,
the bytes are identical whatever the worker count, and small splits (validation, test) still use every
core. With `shards.partitions` > 1 the DAG fans out instead (fanout.py); the shards' rows are the
same, only where each stream's short shards fall differs (one per partition).
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from components.common.config import MixtuneConfig
from components.common.lineage import check_same_version
from components.common.registry import first_round_config, pin_base
from components.common.schemas import SPLITS
from components.common.storage import Store, join
from components.common.tracking import step_run
from components.shards.encode import make_pool, usable_cores
from components.shards.manifest import manifest_header, merge_manifests
from components.shards.partition import fetch_examples, read_batches, split_rows_of, tokenize_partition
from components.shards.streams import SHARD_SCHEMA  # noqa: F401 - the shard schema's public home
from components.shards.tokenizer import build_tokenizer


@dataclass
class ShardsResult:
    shards_uri: str
    manifest: dict = field(default_factory=dict)


def train_texts(path: Path, batch_size: int) -> Iterator[list[str]]:
    """Inputs and targets of the train split, batch by batch (for training the tiny tokenizer)."""
    for batch in read_batches(path, ["inputs", "targets"], 0, split_rows_of(path), batch_size):
        yield batch.column("inputs").to_pylist() + batch.column("targets").to_pylist()


def shard_workers(cfg: MixtuneConfig, batches: int) -> int:
    """shards.workers, or one per usable core; never more than there are batches to share."""
    return max(1, min(cfg.shards.workers or usable_cores(), batches))


def clear_previous(store: Store, out: str) -> None:
    """Empty a previous attempt's prefix: its manifest first, so a rerun never looks complete while it
    rewrites shards, then everything else, so a rerun that writes fewer shards leaves none behind."""
    store.delete(join(out, "manifest.json"))
    store.delete_prefix(out)


def prepare_tokenizer(cfg: MixtuneConfig, train_path: Callable[[], Path], out: str, tok_dir: Path,
                      upstream: dict) -> dict:
    """Build (or load) the tokenizer, save it to tok_dir and return the manifest header.

    train_path is called only when the tokenizer has to be trained (the offline `tiny` base), so a
    real tokenizer never waits for the train split to download."""
    def texts() -> Iterator[list[str]]:
        yield from train_texts(train_path(), cfg.shards.batch_size)

    # Pinned once here: train and evaluate take the base from the manifest, so an alias such as
    # models:/<name>@champion that moves while this run goes on cannot mix two versions in one model.
    base = pin_base(cfg.model.base, cfg.model.initial_base)
    # replay.from and model.base naming one alias must have read one version (components/common/lineage.py).
    check_same_version(cfg, upstream.get("replay") or {}, base["version"])
    tok = build_tokenizer(first_round_config(cfg, base), texts(), base["uri"])
    tok.save_pretrained(tok_dir)
    return {**manifest_header(cfg, upstream, tok, join(out, "tokenizer")), "base_model": base}


def write_shards(cfg: MixtuneConfig, examples_uri: str, artifact_root: str, store: Store) -> ShardsResult:
    out = join(artifact_root, "shards")
    upstream = store.get_json(join(examples_uri, "manifest.json"))
    clear_previous(store, out)
    with tempfile.TemporaryDirectory(prefix="mixtune-shards-") as tmp:
        paths = {s: fetch_examples(store, examples_uri, s, Path(tmp) / "examples") for s in SPLITS}
        tok_dir = Path(tmp) / "tokenizer"
        header = prepare_tokenizer(cfg, lambda: paths["train"], out, tok_dir, upstream)
        batches = sum(math.ceil(split_rows_of(p) / cfg.shards.batch_size) for p in paths.values())
        workers = shard_workers(cfg, batches)
        started = time.perf_counter()
        with make_pool(tok_dir, workers) as pool:
            store.upload_dir(tok_dir, join(out, "tokenizer"))  # while the workers start
            partials = [tokenize_partition(cfg, examples_uri, s, 0, 1, out, store, pool, workers, paths[s])
                        for s in SPLITS]
        timing = {"seconds": time.perf_counter() - started, "workers": workers}
    manifest = merge_manifests(header, partials, upstream, timing)
    store.put_json(join(out, "manifest.json"), manifest)  # last: its presence means complete
    return ShardsResult(out, manifest)


def log_shards(cfg: MixtuneConfig, m: dict) -> None:
    """The shards step's MLflow record (the same whether it ran as one task or fanned out)."""
    import mlflow

    base = m["base_model"]
    if base["version"]:
        mlflow.set_tags({"mixtune.base_model": base["ref"], "mixtune.base_model_version": base["version"]})
    mlflow.log_params({"tokenizer": cfg.model.tokenizer or cfg.model.base, "vocab_size": m["vocab_size"],
                       "rows_per_shard": m["rows_per_shard"], "workers": m["tokenize"]["workers"],
                       "partitions": cfg.shards.partitions})
    for split, info in m["splits"].items():
        mlflow.log_metrics({f"{split}_rows": info["rows"], f"{split}_shards": len(info["shards"]),
                            f"{split}_streams": len(info["streams"]),
                            f"{split}_source_tokens": info["source_tokens"],
                            f"{split}_target_tokens": info["target_tokens"],
                            f"{split}_truncated": info["source_lengths"].get("truncated", 0)})
    mlflow.log_metrics({"tokenize_seconds": m["tokenize"]["seconds"],
                        "tokens_per_second": m["tokenize"]["tokens_per_second"]})
    mlflow.log_dict(m, "shards_manifest.json")
    mlflow.set_tag("mixtune.dataset_version", m["dataset_version"])


def run_shards(cfg: MixtuneConfig, examples_uri: str, artifact_root: str, pipeline_run: str) -> ShardsResult:
    with step_run(cfg, pipeline_run, "shards"):
        result = write_shards(cfg, examples_uri, artifact_root, Store(cfg.storage))
        log_shards(cfg, result.manifest)
    return result
