"""Loader resume cost at step N (goal: <= 5 s whatever N) and steady-state loader throughput.

    python benchmarks/loader_resume.py [--streams 6] [--shards 30] [--rows 1000] [--world 8] [--rank 3]

Builds a synthetic v2 shards artifact (streams x shards x rows, random token ids, ~128 source and
~32 target tokens per row) in a local SeaweedFS S3 server, then for N = 0, 1e3, 1e6, 1e9 global
samples times what a restarted rank does: read the manifest, build the loader, load_state_dict,
take the first batch — with an empty shard cache (downloads included) and with a warm one. States
for N <= 1e6 carry the exact cursors (counted from the draws); at 1e9 the cursors are the weights'
expected counts (counting 1e9 draws would be the replay this design avoids; any cursors map).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from components.common.config import StorageConfig  # noqa: E402
from components.common.storage import Store, join  # noqa: E402
from components.train.loader import from_manifest  # noqa: E402
from pipelines.embedded import LocalS3  # noqa: E402


def token_lists(rng: np.random.Generator, rows: int, mean_len: int) -> pa.ListArray:
    lengths = rng.integers(mean_len // 2, mean_len * 3 // 2, rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = rng.integers(3, 32000, int(offsets[-1])).astype(np.int32)
    values[offsets[1:] - 1] = 1  # every row ends with </s>
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def build_artifact(store: Store, uri: str, streams: int, shards: int, rows: int) -> dict:
    rng = np.random.default_rng(0)
    names = [f"task{k}" for k in range(streams // 2 or 1)]
    names += [f"replay/{n}" for n in names][: max(0, streams - len(names))]
    weights = dict(zip(names, (rng.random(len(names)) + 0.2).tolist()))
    total = sum(weights.values())
    out = {}
    for name in names:
        entries = []
        for k in range(shards):
            n = rows if k < shards - 1 else rows // 3  # a short last shard, as the shards step leaves
            table = pa.table({"id": [f"{name}-{k}-{i}" for i in range(n)], "task": [name] * n,
                              "input_ids": token_lists(rng, n, 128), "labels": token_lists(rng, n, 32)})
            buf = io.BytesIO()
            pq.write_table(table, buf)
            shard_uri = join(uri, "train", name.replace("/", "__"), f"shard-{k:05d}.parquet")
            store.put_bytes(shard_uri, buf.getvalue())
            entries.append({"uri": shard_uri, "rows": n, "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                            "bytes": len(buf.getvalue()), "source_tokens": 0, "target_tokens": 0})
        out[name] = {"task": name, "rows": sum(e["rows"] for e in entries), "shards": entries}
    manifest = {"format": "parquet", "format_version": 2, "rows_per_shard": rows,
                "mixture_weights": {s: w / total for s, w in weights.items()},
                "splits": {"train": {"rows": sum(v["rows"] for v in out.values()), "streams": out}}}
    store.put_json(join(uri, "manifest.json"), manifest)
    return manifest


def state_at(loader, n: int) -> dict:
    """The loader state after n global samples (exact cursors up to 1e6, expected counts beyond)."""
    if n <= 10**6:
        counts = np.bincount(loader.streams_of(0, n), minlength=len(loader.names)) if n else np.zeros(len(loader.names))
    else:
        counts = np.floor(np.array([loader.weights[s] for s in loader.names]) * n)
        counts[int(np.argmax(counts))] += n - counts.sum()
    return {**loader.state_dict(), "sample": n, "cursors": dict(zip(loader.names, map(int, counts)))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=6)
    p.add_argument("--shards", type=int, default=30, help="shards per stream")
    p.add_argument("--rows", type=int, default=1000, help="rows per shard")
    p.add_argument("--world", type=int, default=8)
    p.add_argument("--rank", type=int, default=3)
    p.add_argument("--block", type=int, default=4, help="shuffle_block_shards")
    p.add_argument("--steady", type=int, default=100_000, help="samples timed for throughput")
    args = p.parse_args()
    print("$ python benchmarks/loader_resume.py " + shlex.join(sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        tmp = Path(tmp)
        server = LocalS3(tmp / "s3").start()
        os.environ.update(server.env())
        try:
            server.create_bucket("bench")
            store = Store(StorageConfig(bucket="bench", endpoint_url=server.endpoint))
            uri = join(store.root, "shards")
            t0 = time.time()
            manifest = build_artifact(store, uri, args.streams, args.shards, args.rows)
            streams = manifest["splits"]["train"]["streams"]
            size = sum(e["bytes"] for v in streams.values() for e in v["shards"])
            print(f"artifact: {len(streams)} streams x {args.shards} shards, "
                  f"{manifest['splits']['train']['rows']} rows, {size / 2**20:.0f} MiB, built in {time.time() - t0:.1f} s; "
                  f"world {args.world}, rank {args.rank}, shuffle_block_shards {args.block}")

            def restart(cache: Path, state: dict | None) -> tuple[float, int, object]:
                started = time.perf_counter()
                loader = from_manifest(store.get_json(join(uri, "manifest.json")), "train", store, cache, None,
                                       17, args.rank, args.world, args.block)
                if state is not None:
                    loader.load_state_dict(state)
                batch = loader.batch(16)
                seconds = time.perf_counter() - started
                assert len(batch) == 16
                downloads = loader.cache.downloads
                loader.cache.close()  # let background prefetches finish outside the timing
                return seconds, downloads, loader

            probe = from_manifest(manifest, "train", store, tmp / "probe", None, 17, args.rank, args.world, args.block)
            print("\n| N (global samples) | empty cache: restart + first batch of 16 | shards downloaded by then (incl. prefetch) | warm cache: same |")
            print("|---|---|---|---|")
            for n in (0, 10**3, 10**6, 10**9):
                state = state_at(probe, n)
                cache = tmp / f"cache-{n}"
                cold, downloads, _ = restart(cache, state)
                warm, _, loader = restart(cache, state)
                assert loader.state_dict()["sample"] == n + 16 * args.world
                print(f"| {n:.0e} | {cold:.3f} s | {downloads} | {warm:.3f} s |")

            # The same cache twice: first filled while reading (downloads overlap via prefetch), then warm.
            for label, cache in (("empty cache", tmp / "steady"), ("warm cache", tmp / "steady")):
                loader = from_manifest(manifest, "train", store, cache, None, 17, args.rank, args.world, args.block)
                started = time.perf_counter()
                tokens = sum(len(e.input_ids) + len(e.labels) for e in loader.batch(args.steady))
                seconds = time.perf_counter() - started
                loader.cache.close()
                print(f"\nsteady state, {label}: {args.steady} samples in {seconds:.2f} s = "
                      f"{args.steady / seconds:,.0f} samples/s ({tokens / seconds / 1e6:.1f} M tokens/s) per rank; "
                      f"{loader.cache.downloads} shards downloaded")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
