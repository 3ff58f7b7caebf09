"""The mixture loader: determinism, mixture proportions, epochs, exact resume, shard cache (real S3)."""
from __future__ import annotations

import copy
import hashlib
import io
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.config import StorageConfig
from components.common.storage import Store, join
from components.train.loader import ShardCache, ShardChecksumError, from_manifest

SHARD_SCHEMA = pa.schema([("id", pa.string()), ("task", pa.string()),
                          ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
# Shards of uneven size, as several shards-step partitions leave them.
LAYOUT = {"summarize": [7, 5, 9, 3], "qa": [6, 6], "replay/summarize": [4, 8, 2]}
WEIGHTS = {"summarize": 0.5, "qa": 0.3, "replay/summarize": 0.2}
STREAM_NO = {s: k for k, s in enumerate(sorted(LAYOUT))}


def write_v2_artifact(store: Store, uri: str, layout: dict[str, list[int]], weights: dict[str, float]) -> dict:
    """A v2 shards artifact (contract schema). Row r of stream s reads input_ids [s_no, r, 5, 1],
    labels [r, 1], so every example says where it came from."""
    streams = {}
    for stream, sizes in layout.items():
        entries, row = [], 0
        for k, size in enumerate(sizes):
            rows = [{"id": f"{stream}-{row + i}", "task": stream.removeprefix("replay/"),
                     "input_ids": [STREAM_NO[stream], row + i, 5, 1], "labels": [row + i, 1]} for i in range(size)]
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA), buf)
            shard_uri = join(uri, "train", stream.replace("/", "__"), f"shard-{k:05d}.parquet")
            store.put_bytes(shard_uri, buf.getvalue())
            entries.append({"uri": shard_uri, "rows": size, "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                            "bytes": len(buf.getvalue()), "source_tokens": 4 * size, "target_tokens": 2 * size})
            row += size
        streams[stream] = {"task": stream.removeprefix("replay/"), "rows": row, "shards": entries}
    manifest = {"format": "parquet", "format_version": 2, "dataset_version": "loader-test",
                "mixture_weights": weights, "rows_per_shard": 9,
                "splits": {"train": {"rows": sum(v["rows"] for v in streams.values()), "streams": streams,
                                     "shards": [{**e, "stream": s} for s, v in streams.items() for e in v["shards"]]}}}
    store.put_json(join(uri, "manifest.json"), manifest)
    return manifest


class CountingStore(Store):
    def __init__(self, cfg: StorageConfig):
        super().__init__(cfg)
        self.downloaded: list[str] = []

    def get_file(self, uri, path):
        self.downloaded.append(uri)
        return super().get_file(uri, path)


@pytest.fixture(scope="module")
def storage_cfg(s3_server) -> StorageConfig:
    s3_server.create_bucket("mixtune-test")
    return StorageConfig(bucket="mixtune-test", prefix="test-loader", endpoint_url=s3_server.endpoint)


@pytest.fixture(scope="module")
def manifest(store) -> dict:
    return write_v2_artifact(store, join(store.root, "shards"), LAYOUT, WEIGHTS)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shard-cache")


@pytest.fixture(scope="module")
def store(storage_cfg) -> Store:
    return Store(storage_cfg)  # one client: making a boto3 client costs ~0.1 s


@pytest.fixture
def make(manifest, store, shared_cache):
    def make(seed=7, rank=0, world=1, block=2, weights=None, cache_dir=shared_cache, store=store, man=manifest):
        return from_manifest(man, "train", store, cache_dir, weights, seed, rank, world, block)
    return make


def seen(examples) -> list[tuple]:
    return [(e.key, e.input_ids, e.labels) for e in examples]


def test_same_seed_and_world_give_the_same_sequence(make):
    first = seen(make(seed=7).batch(300))
    assert seen(make(seed=7).batch(300)) == first
    assert [k for k, _, _ in seen(make(seed=8).batch(300))] != [k for k, _, _ in first]
    for (stream, p), input_ids, labels in first:  # the key's example is what the batch returned
        assert input_ids[0] == STREAM_NO[stream] and labels == [input_ids[1], 1]


def test_ranks_split_the_single_process_sequence(make):
    single = seen(make(world=1).batch(300))
    r0, r1 = seen(make(world=2, rank=0).batch(150)), seen(make(world=2, rank=1).batch(150))
    assert [x for pair in zip(r0, r1) for x in pair] == single
    thirds = [{k for k, _, _ in seen(make(world=3, rank=r).batch(100))} for r in range(3)]
    assert not (thirds[0] & thirds[1]) and not (thirds[0] & thirds[2]) and not (thirds[1] & thirds[2])
    assert thirds[0] | thirds[1] | thirds[2] == {k for k, _, _ in single}


def test_proportions_follow_the_weights_and_an_override_needs_no_new_shards(make, storage_cfg):
    loader = make()
    streams = Counter(e.stream for e in loader.batch(20_000))
    assert streams == Counter(loader.counts())
    for stream, weight in WEIGHTS.items():
        assert abs(streams[stream] / 20_000 - weight) < 0.015, (stream, streams)

    store = CountingStore(storage_cfg)  # the cache is warm: an override must not fetch anything
    loader = make(weights={"summarize": 1, "qa": 3}, store=store)
    streams = Counter(e.stream for e in loader.batch(20_000))
    assert streams["replay/summarize"] == 0 and loader.counts()["replay/summarize"] == 0
    assert abs(streams["qa"] / 20_000 - 0.75) < 0.015
    assert store.downloaded == []
    assert loader.state_dict()["weights"] == {"summarize": 0.25, "qa": 0.75, "replay/summarize": 0.0}


def test_bad_weights_are_refused(make, manifest):
    with pytest.raises(ValueError, match=r"unknown stream\(s\) \['sumarize'\].*'qa'"):
        make(weights={"sumarize": 1})
    with pytest.raises(ValueError, match="all zero"):
        make(weights={"qa": 0, "summarize": 0})
    with pytest.raises(ValueError, match=">= 0"):
        make(weights={"qa": -1, "summarize": 2})
    with pytest.raises(ValueError, match="format_version"):
        make(man={**manifest, "format_version": 1})


def rows_of(loader, stream: str, positions) -> list[int]:
    return [loader.example((stream, p)).input_ids[1] for p in positions]


def test_every_epoch_visits_each_row_once_in_a_new_order(make):
    loader = make(block=2)
    for stream, sizes in LAYOUT.items():
        n = sum(sizes)
        epochs = [rows_of(loader, stream, range(e * n, (e + 1) * n)) for e in range(3)]
        for rows in epochs:
            assert sorted(rows) == list(range(n))
        assert epochs[0] != epochs[1] != epochs[2]
    # One shard per block: a shard is read whole before the next (runs of one shard = shard count);
    # all shards in one block: rows of different shards interleave.
    for block, runs_at_least in ((1, None), (8, 5)):
        loader = make(block=block)
        uris = [loader.locate(("summarize", p))[0]["uri"] for p in range(24)]
        runs = 1 + sum(a != b for a, b in zip(uris, uris[1:]))
        assert runs == 4 if runs_at_least is None else runs >= runs_at_least
    # Each epoch also reorders the shards themselves.
    loader = make(block=1)
    shard_orders = {tuple(dict.fromkeys(loader.locate(("summarize", e * 24 + q))[0]["uri"] for q in range(24)))
                    for e in range(6)}
    assert len(shard_orders) > 1


@pytest.mark.parametrize("world,rank,before", [(1, 0, 137), (2, 1, 137), (3, 2, 61), (2, 0, 4000)])
def test_resume_continues_exactly_where_it_stopped(make, world, rank, before):
    # (2, 0, 4000) resumes 96 samples before the end of an 8192-sample draw chunk.
    loader = make(world=world, rank=rank)
    loader.batch(before)
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["sample"] == before * world and sum(state["cursors"].values()) == before * world
    continuation = seen(loader.batch(300))
    resumed = make(world=world, rank=rank)
    resumed.load_state_dict(state)
    assert seen(resumed.batch(300)) == continuation
    if world > 1:  # the state does not depend on the rank: one saved copy serves them all
        other = make(world=world, rank=(rank + 1) % world)
        other.batch(before)
        assert other.state_dict() == state


def test_resume_at_a_billion_samples_maps_without_replaying(make):
    n = 10**9
    cursors = {"summarize": 500_000_123, "qa": 300_000_017, "replay/summarize": 199_999_860}
    state = {"sample": n, "cursors": cursors, "seed": 7, "world": 2, "weights": WEIGHTS, "shuffle_block_shards": 2}
    ranks = [make(world=2, rank=r) for r in range(2)]
    for loader in ranks:
        loader.load_state_dict(state)
    got = [x for pair in zip(*(seen(lo.batch(2000)) for lo in ranks)) for x in pair]
    # Expected keys from the draws alone: each sample's stream, at that stream's running cursor.
    expected, running = [], dict(cursors)
    for k in ranks[0].streams_of(n, 4000).tolist():
        stream = ranks[0].names[k]
        expected.append((stream, running[stream]))
        running[stream] += 1
    assert [key for key, _, _ in got] == expected
    assert ranks[0].state_dict() == {**state, "sample": n + 4000, "cursors": running}
    for stream, weight in WEIGHTS.items():
        assert abs((running[stream] - cursors[stream]) / 4000 - weight) < 0.03
    for (stream, p), input_ids, _ in got[:50]:
        assert input_ids[0] == STREAM_NO[stream]
    # Far positions still map through a permutation: epoch 41_666_667 of qa holds each row once.
    start = 41_666_667 * 12
    assert sorted(rows_of(ranks[0], "qa", range(start, start + 12))) == list(range(12))


def test_a_state_from_another_run_is_refused(make):
    loader = make(seed=7, world=2)
    loader.batch(10)
    state = loader.state_dict()
    for kwargs, message in (({"seed": 8}, "seed was 7, now 8"), ({"world": 4}, "world was 2, now 4"),
                            ({"block": 3}, "shuffle_block_shards was 2, now 3"),
                            ({"weights": {"qa": 1, "summarize": 1}}, "weights were")):
        with pytest.raises(ValueError, match=message):
            make(**{"world": 2, **kwargs}).load_state_dict(state)
    with pytest.raises(ValueError, match="not a non-negative multiple of world 2"):
        make(world=2).load_state_dict({**state, "sample": 21})
    with pytest.raises(ValueError, match="streams were"):
        make(world=2).load_state_dict({**state, "cursors": {"qa": 5, "summarize": 15}})


def test_a_corrupt_shard_is_refused_naming_its_uri(make, manifest, tmp_path):
    for field, value, why in (("sha256", "0" * 64, "sha256"), ("rows", 8, "rows")):
        bad = copy.deepcopy(manifest)
        entry = bad["splits"]["train"]["streams"]["qa"]["shards"][1]
        entry[field] = value
        cache_dir = tmp_path / field
        loader = make(man=bad, cache_dir=cache_dir)
        with pytest.raises(ShardChecksumError, match=f"{entry['uri']}: .*{why}"):
            for p in range(12):
                loader.example(("qa", p))
        loader.cache.close()
        good = manifest["splits"]["train"]["streams"]["qa"]["shards"][0]
        # No half file, and nothing under the bad shard's name.
        assert [f.name for f in cache_dir.glob("*.parquet")] == [f"{good['sha256']}.parquet"]
        assert not list(cache_dir.glob(".*.part"))


def read_one_epoch(loader) -> None:
    for stream, sizes in LAYOUT.items():
        rows_of(loader, stream, range(sum(sizes)))
    loader.cache.close()  # wait for background prefetches before counting downloads


def test_the_cache_downloads_each_shard_once_and_replaces_a_damaged_file(make, storage_cfg, tmp_path):
    first = CountingStore(storage_cfg)
    read_one_epoch(make(store=first, cache_dir=tmp_path))
    assert sorted(first.downloaded) == sorted(set(first.downloaded)) and len(first.downloaded) == 9
    second = CountingStore(storage_cfg)
    read_one_epoch(make(store=second, cache_dir=tmp_path))
    assert second.downloaded == []
    damaged = sorted(tmp_path.glob("*.parquet"))[0]
    damaged.write_bytes(damaged.read_bytes()[:-10])
    third = CountingStore(storage_cfg)
    loader = make(store=third, cache_dir=tmp_path)
    read_one_epoch(loader)
    assert len(third.downloaded) == 1 and not list(tmp_path.glob(".*.part"))
    assert rows_of(loader, "summarize", range(24)) == rows_of(make(), "summarize", range(24))


def test_processes_sharing_a_cache_download_a_shard_once(manifest, storage_cfg, tmp_path):
    # Two caches stand for two ranks on one machine (separate locks in memory, one directory).
    stores = [CountingStore(storage_cfg) for _ in range(2)]
    caches = [ShardCache(s, tmp_path, prefetch_threads=0) for s in stores]
    entries = [e for v in manifest["splits"]["train"]["streams"].values() for e in v["shards"]]
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda job: job[0].fetch(job[1]), [(c, e) for e in entries for c in caches]))
    assert len(stores[0].downloaded) + len(stores[1].downloaded) == len(entries)
    assert len(set(paths)) == len(entries) and all(p.exists() for p in paths)
