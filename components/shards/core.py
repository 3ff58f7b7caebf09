"""Shards core: tokenize each split in batches into fixed-size Parquet shards.

Layout under <artifact_root>/shards: tokenizer/ (save_pretrained), <split>/shard-NNNNN.parquet with
columns id, task, input_ids, labels (both end with </s>, unpadded), and manifest.json written last
with per-shard sha256, row and token counts and token-length statistics.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from components.common.config import MixtuneConfig
from components.common.schemas import SPLITS, read_rows, table_bytes
from components.common.storage import Store, join
from components.common.tracking import step_run
from components.shards.tokenizer import build_tokenizer

SHARD_SCHEMA = pa.schema([
    ("id", pa.string()), ("task", pa.string()),
    ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
])


@dataclass
class ShardsResult:
    shards_uri: str
    manifest: dict = field(default_factory=dict)


def length_stats(lengths: list[int], limit: int) -> dict:
    if not lengths:
        return {"count": 0}
    a = np.asarray(lengths)
    return {"count": int(a.size), "mean": float(a.mean()), "p50": int(np.percentile(a, 50)),
            "p95": int(np.percentile(a, 95)), "max": int(a.max()), "truncated": int((a >= limit).sum()),
            "histogram": np.histogram(a, bins=10, range=(0, limit))[0].tolist()}


def tokenize_split(tok, rows: list[dict], cfg: MixtuneConfig, desc: str):
    """Yield shard tables of at most rows_per_shard rows."""
    m, s = cfg.model, cfg.shards
    buf: dict[str, list] = {k: [] for k in SHARD_SCHEMA.names}
    for start in tqdm(range(0, len(rows), s.batch_size), desc=desc, unit="batch", leave=False):
        batch = rows[start:start + s.batch_size]
        src = tok([r["inputs"] for r in batch], truncation=True, max_length=m.max_source_length)["input_ids"]
        tgt = tok([r["targets"] for r in batch], truncation=True, max_length=m.max_target_length)["input_ids"]
        buf["id"] += [r["id"] for r in batch]
        buf["task"] += [r["task"] for r in batch]
        buf["input_ids"] += src
        buf["labels"] += tgt
        while len(buf["id"]) >= s.rows_per_shard:
            yield pa.table({k: v[: s.rows_per_shard] for k, v in buf.items()}, schema=SHARD_SCHEMA)
            buf = {k: v[s.rows_per_shard:] for k, v in buf.items()}
    if buf["id"]:
        yield pa.table(buf, schema=SHARD_SCHEMA)


def write_shards(cfg: MixtuneConfig, examples_uri: str, artifact_root: str, store: Store) -> ShardsResult:
    out = join(artifact_root, "shards")
    upstream = store.get_json(join(examples_uri, "manifest.json"))
    rows = {split: read_rows(store, join(examples_uri, f"{split}.parquet")) for split in SPLITS}
    tok = build_tokenizer(cfg, (r[k] for r in rows["train"] for k in ("inputs", "targets")))
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        store.upload_dir(tmp, join(out, "tokenizer"))
    manifest = {
        "dataset_version": upstream["dataset_version"],
        "dataset_versions": upstream.get("dataset_versions", [upstream["dataset_version"]]),
        "tokenizer_uri": join(out, "tokenizer"),
        "vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
        "max_source_length": cfg.model.max_source_length, "max_target_length": cfg.model.max_target_length,
        "format": "parquet", "splits": {},
    }
    for split in SPLITS:
        shards, src_len, tgt_len = [], [], []
        for i, table in enumerate(tokenize_split(tok, rows[split], cfg, f"tokenize {split}")):
            data = table_bytes(table)
            uri = join(out, split, f"shard-{i:05d}.parquet")
            store.put_bytes(uri, data)
            lens_in = [len(x) for x in table.column("input_ids").to_pylist()]
            lens_out = [len(x) for x in table.column("labels").to_pylist()]
            src_len += lens_in
            tgt_len += lens_out
            shards.append({"uri": uri, "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest(),
                           "source_tokens": sum(lens_in), "target_tokens": sum(lens_out)})
        manifest["splits"][split] = {
            "rows": sum(x["rows"] for x in shards), "shards": shards,
            "source_lengths": length_stats(src_len, cfg.model.max_source_length),
            "target_lengths": length_stats(tgt_len, cfg.model.max_target_length),
        }
    store.put_json(join(out, "manifest.json"), manifest)  # last: its presence means complete
    return ShardsResult(out, manifest)


def run_shards(cfg: MixtuneConfig, examples_uri: str, artifact_root: str, pipeline_run: str) -> ShardsResult:
    import mlflow

    with step_run(cfg, pipeline_run, "shards"):
        result = write_shards(cfg, examples_uri, artifact_root, Store(cfg.storage))
        m = result.manifest
        mlflow.log_params({"tokenizer": cfg.model.tokenizer or cfg.model.base, "vocab_size": m["vocab_size"]})
        for split, info in m["splits"].items():
            mlflow.log_metrics({f"{split}_rows": info["rows"], f"{split}_shards": len(info["shards"]),
                                f"{split}_source_tokens": sum(s["source_tokens"] for s in info["shards"]),
                                f"{split}_truncated": info["source_lengths"].get("truncated", 0)})
        mlflow.log_dict(m, "shards_manifest.json")
        mlflow.set_tag("mixtune.dataset_version", m["dataset_version"])
    return result
