"""The shards step fanned out over input partitions: prepare -> partition 0..P-1 (a KFP ParallelFor) -> merge.

prepare  builds the tokenizer once, uploads it, and writes <out>/_fanout/plan.json (examples URI,
         partition count, manifest header).
partition k tokenizes rows [k*N//P, (k+1)*N//P) of every split with its own process pool and writes
         <out>/_fanout/partial-k-of-P.json; it returns that URI with the partial's sha256.
merge    checks every partial against its sha256, merges them and writes manifest.json last.

Partition tasks find the plan by convention (<artifact_root>/shards/_fanout/plan.json) and take only
pipeline parameters plus their index: kfp.local 2.17 hands a ParallelFor body's other task-output
inputs the loop item instead (checked: an upstream output `root` arrived as "0", "1", "2"), and the
same inputs then work in both engines. The sha256 in each reference also makes the merge task's KFP
cache key follow the partials' content.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from components.common import tracking
from components.common.config import MODELS_SCHEME, MixtuneConfig
from components.common.schemas import SPLITS
from components.common.storage import Store, join
from components.shards.core import ShardsResult, clear_previous, prepare_tokenizer
from components.shards.encode import make_pool, usable_cores
from components.shards.manifest import merge_manifests
from components.shards.partition import fetch_examples, tokenize_partition

FANOUT_DIR = "_fanout"


def shards_out(artifact_root: str) -> str:
    return join(artifact_root, "shards")


def plan_uri(artifact_root: str) -> str:
    return join(shards_out(artifact_root), FANOUT_DIR, "plan.json")


def prepare_fanout(cfg: MixtuneConfig, examples_uri: str, artifact_root: str, store: Store) -> str:
    """Tokenizer + plan for cfg.shards.partitions partition tasks; returns the plan's URI."""
    out = shards_out(artifact_root)
    upstream = store.get_json(join(examples_uri, "manifest.json"))
    if any((ref or "").startswith(MODELS_SCHEME) for ref in (cfg.model.base, cfg.model.tokenizer)):
        tracking.setup(cfg)  # this task runs outside a step run, and a models:/ base is read from the registry
    clear_previous(store, out)  # a previous attempt's shards and partials too: they must not be merged
    with tempfile.TemporaryDirectory(prefix="mixtune-shards-") as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        header = prepare_tokenizer(cfg, lambda: fetch_examples(store, examples_uri, "train", tmp),
                                   out, tok_dir, upstream)
        store.upload_dir(tok_dir, join(out, "tokenizer"))
    plan = {"examples_uri": examples_uri, "partitions": cfg.shards.partitions, "header": header}
    store.put_json(plan_uri(artifact_root), plan)
    return plan_uri(artifact_root)


def partial_uri(artifact_root: str, partition: int, partitions: int) -> str:
    return join(shards_out(artifact_root), FANOUT_DIR, f"partial-{partition:05d}-of-{partitions:05d}.json")


def run_partition(cfg: MixtuneConfig, artifact_root: str, partition: int, store: Store) -> str:
    """Tokenize partition k of every split; returns "<partial uri>#sha256=<hex>" for the merge."""
    plan = store.get_json(plan_uri(artifact_root))
    n = plan["partitions"]
    if not 0 <= partition < n:
        raise ValueError(f"shards partition {partition} is outside the plan's {n} partitions "
                         f"({plan_uri(artifact_root)}); the plan and the pipeline disagree: recompile")
    out = shards_out(artifact_root)
    workers = max(1, cfg.shards.workers or usable_cores())
    with tempfile.TemporaryDirectory(prefix="mixtune-shards-") as tmp:
        tok_dir = store.download_dir(join(out, "tokenizer"), Path(tmp) / "tokenizer")
        with make_pool(tok_dir, workers) as pool:
            partials = [tokenize_partition(cfg, plan["examples_uri"], split, partition, n, out, store, pool, workers)
                        for split in SPLITS]
    data = json.dumps(partials, sort_keys=True).encode()
    uri = partial_uri(artifact_root, partition, n)
    store.put_bytes(uri, data)
    return f"{uri}#sha256={hashlib.sha256(data).hexdigest()}"


def read_partial(store: Store, ref: str) -> list[dict]:
    uri, _, digest = ref.partition("#sha256=")
    data = store.get_bytes(uri)
    if digest and hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"shards partial {uri} changed after its partition task wrote it "
                         f"(sha256 {hashlib.sha256(data).hexdigest()}, expected {digest}); rerun the pipeline")
    return json.loads(data)


def merge_fanout(artifact_root: str, partial_refs: list[str], store: Store) -> ShardsResult:
    """The manifest from every partition task's partials, written last."""
    plan = store.get_json(plan_uri(artifact_root))
    tasks = [read_partial(store, ref) for ref in partial_refs]
    if len(tasks) != plan["partitions"]:
        raise ValueError(f"shards merge got {len(tasks)} partition results, the plan has {plan['partitions']}")
    upstream = store.get_json(join(plan["examples_uri"], "manifest.json"))
    # Tasks run side by side and each does its splits one after another: the slowest task's total.
    timing = {"seconds": max(sum(p["seconds"] for p in t) for t in tasks),
              "workers": sum(max(p["workers"] for p in t) for t in tasks)}
    manifest = merge_manifests(plan["header"], [p for t in tasks for p in t], upstream, timing)
    manifest["partitions"] = plan["partitions"]
    out = shards_out(artifact_root)
    store.put_json(join(out, "manifest.json"), manifest)  # last: its presence means complete
    return ShardsResult(out, manifest)
