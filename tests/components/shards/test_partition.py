"""Streaming tokenization on real S3: stream routing, determinism across worker counts, and the
partition + merge path a cluster fan-out uses."""
from __future__ import annotations

import io
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.schemas import SPLITS
from components.common.storage import join
from components.shards.core import write_shards
from components.shards.encode import make_pool
from components.shards.manifest import merge_manifests
from components.shards.partition import partition_range, read_batches, tokenize_partition


def read_shard(store, entry: dict) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get_bytes(entry["uri"])))


def stream_rows(store, manifest: dict, split: str) -> dict[str, list[dict]]:
    """Every stream's rows, concatenated in shard order."""
    return {name: [r for e in s["shards"] for r in read_shard(store, e).to_pylist()]
            for name, s in manifest["splits"][split]["streams"].items()}


def assert_same_content(store, whole: dict, merged: dict) -> None:
    """Two manifests of the same examples hold the same rows, tokens and length stats per split and stream."""
    for split in SPLITS:
        a, b = whole["splits"][split], merged["splits"][split]
        for key in ("rows", "source_tokens", "target_tokens", "source_lengths", "target_lengths"):
            assert a[key] == b[key], (split, key)
        assert stream_rows(store, whole, split) == stream_rows(store, merged, split)


def test_replayed_rows_form_their_own_stream(shards_config, store, examples_uri):
    cfg = shards_config(rows_per_shard=50, batch_size=64, workers=1)
    m = write_shards(cfg, examples_uri, join(store.root, "runs", "p1"), store).manifest
    rows = stream_rows(store, m, "train")
    assert sorted(rows) == ["intent", "replay/summarization", "summarization"]
    assert len(rows["replay/summarization"]) == 120
    assert all(r["id"].startswith("replay:") and r["task"] == "summarization" for r in rows["replay/summarization"])
    assert not any(r["id"].startswith("replay:") for s in ("intent", "summarization") for r in rows[s])
    assert {e["uri"].rsplit("/", 2)[1] for e in m["splits"]["train"]["streams"]["replay/summarization"]["shards"]} \
        == {"replay__summarization"}
    # Inside a stream, rows keep the templates' order (sorted by id).
    assert all([r["id"] for r in v] == sorted(r["id"] for r in v) for v in rows.values())
    assert m["splits"]["train"]["streams"]["replay/summarization"]["task"] == "summarization"


def test_weights_default_to_train_rows_per_stream(shards_config, store, examples_writer):
    uri = join(store.root, "runs", "e2", "templates")
    examples_writer(uri, {"train": 90, "validation": 6, "test": 6}, weights=None)
    stale = join(store.root, "runs", "p2", "shards", "manifest.json")
    store.put_json(stale, {"from": "an earlier attempt"})
    old_shard = join(store.root, "runs", "p2", "shards", "train", "intent", "shard-00099.parquet")
    store.put_bytes(old_shard, b"a shard an earlier, larger attempt wrote")
    seen = []  # whether a manifest exists while shards are written: a rerun must not look complete
    put = store.put_bytes
    store.put_bytes = lambda uri, data: seen.append(store.exists(stale)) or put(uri, data)
    m = write_shards(shards_config(workers=1), uri, join(store.root, "runs", "p2"), store).manifest
    assert seen and not any(seen) and store.get_json(stale) == m
    assert not store.exists(old_shard)  # a rerun leaves only what its manifest lists
    streams = m["splits"]["train"]["streams"]
    assert m["mixture_weights"] == pytest.approx({s: v["rows"] / 90 for s, v in streams.items()})
    assert sum(m["mixture_weights"].values()) == pytest.approx(1.0)


def test_same_bytes_with_one_or_two_workers(shards_config, store, examples_uri, trained_tokenizer_dir):
    runs = {}
    for workers in (1, 2):
        cfg = shards_config(rows_per_shard=37, batch_size=25, workers=workers, tokenizer=trained_tokenizer_dir)
        runs[workers] = write_shards(cfg, examples_uri, join(store.root, "runs", f"w{workers}"), store).manifest
    assert runs[2]["tokenize"]["workers"] == 2
    for split in SPLITS:
        one, two = (runs[w]["splits"][split] for w in (1, 2))
        assert [(s["stream"], s["rows"], s["sha256"], s["bytes"]) for s in one["shards"]] \
            == [(s["stream"], s["rows"], s["sha256"], s["bytes"]) for s in two["shards"]]
        assert one["source_lengths"] == two["source_lengths"] and one["target_lengths"] == two["target_lengths"]


def test_partitions_merged_equal_one_shot(shards_config, store, examples_uri, tmp_path):
    cfg = shards_config(rows_per_shard=40, batch_size=30, workers=2)
    whole = write_shards(shards_config(rows_per_shard=40, batch_size=30, workers=1), examples_uri,
                         join(store.root, "runs", "one"), store).manifest
    out = join(store.root, "runs", "fan", "shards")
    store.download_dir(whole["tokenizer_uri"], tmp_path / "tok")
    # Splits need not share a partition count: 3 train partitions of 200 rows, one for the others.
    counts = {"train": 3, "validation": 1, "test": 1}
    plan = [{"split": s, "partition": k, "num_partitions": n} for s, n in counts.items() for k in range(n)]
    with make_pool(tmp_path / "tok", 2) as pool:
        partials = [tokenize_partition(cfg, examples_uri, p["split"], p["partition"], p["num_partitions"], out,
                                       store, pool, workers=2) for p in reversed(plan)]
    merged = merge_manifests({k: v for k, v in whole.items() if k not in ("splits", "tokenize", "mixture_weights")},
                             partials, store.get_json(join(examples_uri, "manifest.json")))
    assert merged["mixture_weights"] == whole["mixture_weights"]
    assert_same_content(store, whole, merged)
    for split in SPLITS:
        b = merged["splits"][split]
        assert all(0 < s["rows"] <= 40 for s in b["shards"])
        assert len({s["uri"] for s in b["shards"]}) == len(b["shards"])
    # One short shard per stream and partition at most: 3 train partitions of 200 rows.
    train = merged["splits"]["train"]["streams"]
    assert all(len(s["shards"]) <= 3 * math.ceil(200 / 40) for s in train.values())
    assert len(merged["splits"]["train"]["shards"]) > len(whole["splits"]["train"]["shards"])


def test_a_missing_partition_is_refused(shards_config, store, examples_uri, trained_tokenizer_dir):
    cfg = shards_config(workers=1)
    out = join(store.root, "runs", "fan", "shards")
    # A fan-out's first task puts the tokenizer under <out>/tokenizer; partitions load it from there.
    store.upload_dir(trained_tokenizer_dir, join(out, "tokenizer"))
    partials = [tokenize_partition(cfg, examples_uri, s, 0, 1 if s != "train" else 2, out, store)
                for s in SPLITS]  # partition 1 of train never ran
    assert partials[0]["row_range"] == [0, 300] and partials[0]["streams"]
    header = {"max_source_length": 192, "max_target_length": 64}
    with pytest.raises(ValueError, match="'train': partitions \\[0\\] of \\[2\\]"):
        merge_manifests(header, partials, {})
    with pytest.raises(ValueError, match="repeated"):
        merge_manifests(header, partials + partials[:1], {})


def test_partition_ranges_and_row_group_reads(tmp_path):
    assert [partition_range(10, k, 3) for k in range(3)] == [(0, 3), (3, 6), (6, 10)]
    with pytest.raises(ValueError):
        partition_range(10, 3, 3)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": list(range(50))}), path, row_group_size=7)
    for start, stop in [(0, 50), (3, 18), (14, 21), (49, 50), (20, 20)]:
        got = [v for b in read_batches(path, ["x"], start, stop, batch_size=4) for v in b.column("x").to_pylist()]
        assert got == list(range(start, stop))
        assert all(b.num_rows <= 4 for b in read_batches(path, ["x"], start, stop, batch_size=4))
