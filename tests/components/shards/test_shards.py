"""The shards step end to end on real S3: layout, manifest (format_version 2) and MLflow."""
from __future__ import annotations

import hashlib
import io
import math

import mlflow
import pyarrow.parquet as pq

from components.common.config import SourceConfig
from components.common.schemas import SPLITS
from components.common.storage import join
from components.ingest.core import run_ingest
from components.shards.core import run_shards, write_shards
from components.shards.streams import stream_dir
from components.shards.tokenizer import train_unigram
from components.templates.core import run_templates
from pipelines.sample_data import generate, write_jsonl


def _examples(cfg, store, tmp_path, run):
    path = write_jsonl(generate(120, seed=3), tmp_path / "c.jsonl")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": [SourceConfig(path=str(path))]})})
    root = join(store.root, "runs", run)
    ing = run_ingest(cfg, root, run)
    return cfg, root, run_templates(cfg, ing.records_uri, root, run)


def test_trained_tokenizer_is_t5_like():
    tok = train_unigram(["Customer: order 123456 is late.\nAgent: sorry!"] * 50, vocab_size=300)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("order 123456")["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "order 123456"


def test_shards_manifest_matches_objects(shards_config, store, tmp_path):
    cfg, root, tmpl = _examples(shards_config(rows_per_shard=40), store, tmp_path, "s1")
    res = run_shards(cfg, tmpl.examples_uri, root, "s1")
    out = join(root, "shards")
    m = store.get_json(join(out, "manifest.json"))
    upstream = store.get_json(join(tmpl.examples_uri, "manifest.json"))
    assert m == res.manifest and res.shards_uri == out
    assert (m["format"], m["format_version"], m["rows_per_shard"]) == ("parquet", 2, 40)
    assert m["dataset_version"] == tmpl.dataset_version and m["dataset_versions"] == upstream["dataset_versions"]
    weights = (upstream.get("mixture") or {}).get("weights")
    assert m["mixture_weights"] == (weights or {s: v["rows"] / m["splits"]["train"]["rows"]
                                                for s, v in m["splits"]["train"]["streams"].items()})
    assert m["tokenize"]["workers"] >= 1 and m["tokenize"]["tokens_per_second"] > 0
    for split in SPLITS:
        info = m["splits"][split]
        assert info["rows"] == tmpl.split_rows[split] == sum(s["rows"] for s in info["streams"].values())
        # The flattened list is every stream's shards, stream by stream, each tagged with its stream.
        assert info["shards"] == [{**e, "stream": s} for s, v in info["streams"].items() for e in v["shards"]]
        for stream, sv in info["streams"].items():
            assert len(sv["shards"]) == math.ceil(sv["rows"] / 40)
            assert all(e["rows"] == 40 for e in sv["shards"][:-1])
            for k, entry in enumerate(sv["shards"]):
                assert entry["uri"] == join(out, split, stream_dir(stream), f"shard-{k:05d}.parquet")
                data = store.get_bytes(entry["uri"])
                assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"])
                table = pq.read_table(io.BytesIO(data))
                assert table.num_rows == entry["rows"] and set(table.column("task").to_pylist()) == {sv["task"]}
                ids, labels = table.column("input_ids").to_pylist(), table.column("labels").to_pylist()
                assert (sum(map(len, ids)), sum(map(len, labels))) == (entry["source_tokens"], entry["target_tokens"])
                assert all(x[-1] == m["eos_token_id"] for x in ids + labels)
                assert all(len(x) <= m["max_source_length"] for x in ids)
                assert all(len(x) <= m["max_target_length"] for x in labels)
        assert info["source_tokens"] == sum(e["source_tokens"] for e in info["shards"])
        assert info["source_lengths"]["count"] == info["rows"]
        assert sum(info["target_lengths"]["histogram"]) == info["rows"]
    assert store.exists(join(m["tokenizer_uri"], "tokenizer.json"))
    run = mlflow.search_runs(search_all_experiments=True, filter_string="tags.mlflow.runName = '3-shards'",
                             output_format="list")[0]
    assert run.data.metrics["train_rows"] == m["splits"]["train"]["rows"]
    assert run.data.metrics["tokens_per_second"] == m["tokenize"]["tokens_per_second"]


def test_shards_with_the_real_t5_tokenizer(shards_config, store, examples_uri, t5_tokenizer_path):
    from transformers import AutoTokenizer

    cfg = shards_config(tokenizer=str(t5_tokenizer_path), workers=2, batch_size=50)
    m = write_shards(cfg, examples_uri, join(store.root, "runs", "s2"), store).manifest
    assert m["vocab_size"] == 32100 and (m["pad_token_id"], m["eos_token_id"]) == (0, 1)
    entry = m["splits"]["validation"]["shards"][0]
    shard = pq.read_table(io.BytesIO(store.get_bytes(entry["uri"]))).to_pylist()
    examples = {r["id"]: r for r in pq.read_table(io.BytesIO(store.get_bytes(
        join(examples_uri, "validation.parquet")))).to_pylist()}
    tok = AutoTokenizer.from_pretrained(t5_tokenizer_path)
    want = tok([examples[r["id"]]["inputs"] for r in shard], truncation=True, max_length=cfg.model.max_source_length)
    assert [r["input_ids"] for r in shard] == want["input_ids"]


def test_an_s3_base_brings_its_own_tokenizer(shards_config, store, t5_tokenizer_path, tmp_path, monkeypatch):
    """Retraining from an earlier run's model (model.base = its s3:// prefix) tokenizes with that model's
    tokenizer, copied down like the weights."""
    from transformers import AutoTokenizer

    from components.shards.tokenizer import build_tokenizer

    monkeypatch.setenv("MIXTUNE_CACHE", str(tmp_path / "cache"))
    uri = join(store.root, "runs", "earlier", "train", "model")
    store.upload_dir(t5_tokenizer_path, uri)
    cfg = shards_config()
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": uri, "tokenizer": None})})
    tok = build_tokenizer(cfg, iter(()))
    assert tok("order 42 is late")["input_ids"] == AutoTokenizer.from_pretrained(t5_tokenizer_path)(
        "order 42 is late")["input_ids"]


def test_a_registered_base_is_pinned_in_the_manifest(shards_config, store, t5_tokenizer_path, register_champion,
                                                     tmp_path, monkeypatch):
    """model.base = models:/<name>@champion: the shards step resolves the alias once and records the version
    and its files in the manifest header (train and evaluate use that, wherever the alias moves next)."""
    from transformers import AutoTokenizer

    from components.shards.core import prepare_tokenizer

    monkeypatch.setenv("MIXTUNE_CACHE", str(tmp_path / "cache"))
    cfg = shards_config()
    uri = register_champion(cfg, t5_tokenizer_path, "summarizer")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"base": "models:/summarizer@champion", "tokenizer": None})})
    header = prepare_tokenizer(cfg, lambda: None, join(store.root, "out"), tmp_path / "tok",
                               {"dataset_version": "v-test"})
    assert header["base_model"] == {"ref": "models:/summarizer@champion", "uri": uri,
                                    "registered_model": "summarizer", "version": "1"}
    saved = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert saved("order 42")["input_ids"] == AutoTokenizer.from_pretrained(t5_tokenizer_path)("order 42")["input_ids"]
