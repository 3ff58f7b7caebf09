"""One input partition of one split -> its streams' shards on S3 and a partial manifest.

A partition is a contiguous row range of templates' <split>.parquet (partition k of n covers rows
[k*N//n, (k+1)*N//n)). It is read in record batches, tokenized through an ordered, bounded pool
map, and cut per stream into shards as they fill; nothing grows with the data except the partial
manifest's list of shard entries. Partition k numbers its shards from k * (most shards one stream
of it can have), so partitions never collide and need no coordination.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common.config import MixtuneConfig
from components.common.schemas import SPLITS
from components.common.storage import Store, join
from components.shards.encode import encode_pairs, make_pool, ordered_map
from components.shards.manifest import LengthCounts
from components.shards.streams import SHARD_SCHEMA, ShardSink, StreamWriter, stream_column


def partition_range(total_rows: int, partition: int, num_partitions: int) -> tuple[int, int]:
    if not 0 <= partition < num_partitions:
        raise ValueError(f"partition {partition} is not in [0, {num_partitions})")
    return total_rows * partition // num_partitions, total_rows * (partition + 1) // num_partitions


def read_batches(path: str | Path, columns: list[str], start: int, stop: int,
                 batch_size: int) -> Iterator[pa.RecordBatch]:
    """Rows [start, stop) of a local Parquet file, batch by batch; row groups outside are not read.

    pyarrow's defaults (pre_buffer, unbuffered column chunks, threads) read whole row groups ahead: a
    300 MB file peaked at +380 MB. Buffered page reads keep it at a few batches (+65 MB) whatever the size.
    """
    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    groups, offset, first = [], 0, None
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset < stop and offset + n > start:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    if not groups:
        return
    position = first
    for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=columns, use_threads=False):
        lo, hi = max(start - position, 0), min(stop - position, batch.num_rows)
        position += batch.num_rows
        if lo < hi:
            yield batch.slice(lo, hi - lo)
        if position >= stop:
            return


def split_rows_of(path: str | Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def fetch_examples(store: Store, examples_uri: str, split: str, local_dir: str | Path) -> Path:
    # A local copy (disk, not memory); pyarrow then reads it batch by batch.
    return store.get_file(join(examples_uri, f"{split}.parquet"), Path(local_dir) / f"{split}.parquet")


def _encode_jobs(cfg: MixtuneConfig, path: Path, start: int, stop: int) -> Iterator[tuple[pa.RecordBatch, tuple]]:
    m = cfg.model
    for batch in read_batches(path, ["id", "task", "inputs", "targets"], start, stop, cfg.shards.batch_size):
        # ids and tasks stay here; only the texts travel to a worker.
        yield batch.select(["id", "task"]), (batch.column("inputs"), batch.column("targets"),
                                             m.max_source_length, m.max_target_length)


def tokenize_partition(cfg: MixtuneConfig, examples_uri: str, split: str, partition: int, num_partitions: int,
                       out: str, store: Store, pool: Executor | None = None, workers: int = 1,
                       local_examples: str | Path | None = None, tokenizer_dir: str | Path | None = None) -> dict:
    """Tokenize one partition into <out>/<split>/<stream dir>/shard-NNNNN.parquet; return its partial manifest.

    pool: an executor from make_pool (shared across partitions of one process); without one, a pool of
    `workers` is made over `tokenizer_dir` (default: <out>/tokenizer, downloaded). local_examples: the
    split's Parquet already on disk (default: downloaded from examples_uri).
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mixtune-shards-") as tmp, contextlib.ExitStack() as own:
        path = Path(local_examples) if local_examples else fetch_examples(store, examples_uri, split, tmp)
        if pool is None:
            tok_dir = tokenizer_dir or store.download_dir(join(out, "tokenizer"), Path(tmp) / "tokenizer")
            pool = own.enter_context(make_pool(tok_dir, workers))
        start, stop = partition_range(split_rows_of(path), partition, num_partitions)
        # Partition k numbers its shards after every shard partitions 0..k-1 could have written.
        first_index = partition * max(1, math.ceil((stop - start) / cfg.shards.rows_per_shard))
        writers, src_lengths, tgt_lengths = _write_streams(cfg, path, start, stop, pool, workers,
                                                           ShardSink(store, out, split), first_index)
    return {
        "split": split, "partition": partition, "num_partitions": num_partitions, "row_range": [start, stop],
        "rows": stop - start, "seconds": round(time.perf_counter() - started, 3), "workers": max(1, workers),
        "streams": {name: w.summary() for name, w in sorted(writers.items())},
        "source_length_counts": src_lengths.to_list(), "target_length_counts": tgt_lengths.to_list(),
    }


def _write_streams(cfg: MixtuneConfig, path: Path, start: int, stop: int, pool: Executor, workers: int,
                   sink: ShardSink, first_index: int) -> tuple[dict[str, StreamWriter], LengthCounts, LengthCounts]:
    """Rows [start, stop) through the pool, in order, into one StreamWriter per stream."""
    writers: dict[str, StreamWriter] = {}
    src_lengths, tgt_lengths = LengthCounts(), LengthCounts()
    window = 2 * max(1, workers)  # keeps every worker busy while this process writes a shard
    for meta, (input_ids, labels) in ordered_map(pool, encode_pairs, _encode_jobs(cfg, path, start, stop), window):
        table = pa.Table.from_arrays([meta.column("id"), meta.column("task"), input_ids, labels], schema=SHARD_SCHEMA)
        src_lengths.add(pc.list_value_length(input_ids).to_numpy())
        tgt_lengths.add(pc.list_value_length(labels).to_numpy())
        streams = stream_column(meta.column("id"), meta.column("task"))
        names = pc.unique(streams).to_pylist()
        for stream in names:
            rows = table if len(names) == 1 else table.filter(pc.equal(streams, stream))
            if stream not in writers:
                task = rows.column("task")[0].as_py()
                writers[stream] = StreamWriter(stream, task, cfg.shards.rows_per_shard, first_index, sink)
            writers[stream].add(rows)
    for w in writers.values():
        w.close()
    return writers, src_lengths, tgt_lengths
