"""A shards artifact as the shards step writes it (format_version 2), built here so train tests need nothing else.

The tokenizer is a small BPE trained with `tokenizers` on the generated chats (no ../shared):
<pad>=0, </s>=1, <unk>=2 as in T5, and every encoding ends with </s>.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.config import MixtuneConfig
from components.common.storage import Store, join
from pipelines.sample_data import generate

STREAM = "summarization"  # the one stream (a task's new examples; no replay here)
SHARD_SCHEMA = pa.schema([("id", pa.string()), ("task", pa.string()),
                          ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])


def dialogue(row: dict) -> str:
    return "Summarize the conversation:\n" + "\n".join(
        f"{m['role'].capitalize()}: {m['content']}" for m in row["messages"])


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size,
                                                       special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)


def length_stats(lengths: list[int], limit: int) -> dict:
    a = np.asarray(lengths)
    return {"count": int(a.size), "mean": float(a.mean()), "p50": int(np.percentile(a, 50)),
            "p95": int(np.percentile(a, 95)), "max": int(a.max()), "truncated": int((a >= limit).sum()),
            "histogram": np.histogram(a, bins=10, range=(0, limit))[0].tolist()}


def write_shards_artifact(store: Store, uri: str, cfg: MixtuneConfig, tmp: Path, n: int = 120,
                          train_shards: int = 2) -> dict:
    """Tokenise n generated chats into train (several shards) and validation, as one stream
    "summarization" in the v2 layout (<split>/summarization/shard-NNNNN.parquet); manifest last."""
    rows = generate(n)
    tokenizer = train_tokenizer([dialogue(r) for r in rows] + [r["summary"] for r in rows], 600, tmp / "tok")
    store.upload_dir(tmp / "tok", join(uri, "tokenizer"))
    n_val = max(2, n // 10)
    splits = {"train": rows[n_val:], "validation": rows[:n_val]}
    manifest = {"format": "parquet", "format_version": 2,
                "dataset_version": "test-" + hashlib.sha256(str(n).encode()).hexdigest()[:12],
                "tokenizer_uri": join(uri, "tokenizer"), "vocab_size": len(tokenizer),
                "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
                "max_source_length": cfg.model.max_source_length,
                "max_target_length": cfg.model.max_target_length,
                "rows_per_shard": -(-len(splits["train"]) // train_shards),
                "mixture_weights": {STREAM: 1.0}, "splits": {}}
    manifest["dataset_versions"] = [manifest["dataset_version"]]
    for split, part in splits.items():
        src = tokenizer([dialogue(r) for r in part], truncation=True, max_length=cfg.model.max_source_length)
        tgt = tokenizer([r["summary"] for r in part], truncation=True, max_length=cfg.model.max_target_length)
        src_len, tgt_len = [len(x) for x in src["input_ids"]], [len(x) for x in tgt["input_ids"]]
        count = train_shards if split == "train" else 1
        shards = []
        for k in range(count):
            idx = range(k, len(part), count)
            table = pa.Table.from_pylist([
                {"id": part[i]["conversation_id"], "task": STREAM,
                 "input_ids": src["input_ids"][i], "labels": tgt["input_ids"][i]} for i in idx], schema=SHARD_SCHEMA)
            buf = io.BytesIO()
            pq.write_table(table, buf)
            shard_uri = join(uri, split, STREAM, f"shard-{k:05d}.parquet")
            store.put_bytes(shard_uri, buf.getvalue())
            shards.append({"uri": shard_uri, "rows": table.num_rows, "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                           "bytes": len(buf.getvalue()), "source_tokens": sum(src_len[i] for i in idx),
                           "target_tokens": sum(tgt_len[i] for i in idx)})
        tokens = {"source_tokens": sum(src_len), "target_tokens": sum(tgt_len)}
        manifest["splits"][split] = {
            "rows": len(part), **tokens,
            "source_lengths": length_stats(src_len, cfg.model.max_source_length),
            "target_lengths": length_stats(tgt_len, cfg.model.max_target_length),
            "streams": {STREAM: {"task": STREAM, "rows": len(part), **tokens, "shards": shards}},
            "shards": [{**e, "stream": STREAM} for e in shards],
        }
    manifest["tokenize"] = {"seconds": 0.0, "workers": 1, "tokens_per_second": 0.0}
    store.put_json(join(uri, "manifest.json"), manifest)
    return manifest


@pytest.fixture
def shards_uri(store: Store, tiny_config: MixtuneConfig, tmp_path: Path) -> str:
    uri = join(store.root, "runs", "r1", "shards")
    write_shards_artifact(store, uri, tiny_config, tmp_path)
    return uri
