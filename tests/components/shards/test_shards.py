import hashlib

import pyarrow.parquet as pq
import io

from components.common.config import SourceConfig
from components.common.storage import join
from components.ingest.core import run_ingest
from components.shards.core import run_shards
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


def test_shards_manifest_matches_objects(tiny_config, store, tmp_path):
    cfg = tiny_config.model_copy(update={"shards": tiny_config.shards.model_copy(update={"rows_per_shard": 40})})
    cfg, root, tmpl = _examples(cfg, store, tmp_path, "s1")
    res = run_shards(cfg, tmpl.examples_uri, root, "s1")
    m = store.get_json(join(root, "shards", "manifest.json"))
    assert m == res.manifest and m["dataset_version"] == tmpl.dataset_version
    assert m["splits"]["train"]["rows"] == tmpl.split_rows["train"]
    assert len(m["splits"]["train"]["shards"]) == -(-tmpl.split_rows["train"] // 40)
    for info in m["splits"].values():
        for shard in info["shards"]:
            data = store.get_bytes(shard["uri"])
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            table = pq.read_table(io.BytesIO(data))
            assert table.num_rows == shard["rows"]
            ids = table.column("input_ids").to_pylist()
            labels = table.column("labels").to_pylist()
            assert sum(map(len, ids)) == shard["source_tokens"]
            assert all(x[-1] == m["eos_token_id"] or len(x) == m["max_source_length"] for x in ids)
            assert all(len(x) <= m["max_target_length"] for x in labels)
    assert store.exists(join(m["tokenizer_uri"], "tokenizer.json"))


def test_shards_with_the_real_t5_tokenizer(tiny_config, store, tmp_path, t5_tokenizer_path):
    cfg = tiny_config.model_copy(update={"model": tiny_config.model.model_copy(update={"tokenizer": str(t5_tokenizer_path)})})
    cfg, root, tmpl = _examples(cfg, store, tmp_path, "s2")
    m = run_shards(cfg, tmpl.examples_uri, root, "s2").manifest
    assert m["vocab_size"] == 32100 and (m["pad_token_id"], m["eos_token_id"]) == (0, 1)
