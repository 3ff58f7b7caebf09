"""Streams, and the writer that cuts each stream into fixed-size shards as rows arrive.

A stream is what the training loader mixes: the new examples of task T form stream "T"; the replayed
examples of T (ids starting with "replay:") form stream "replay/T", a replay of a replay "replay/replay/T"
(components/common/schemas.py). Shards of a stream live under
<split>/<stream dir>/ where the directory name is the stream with "/" replaced by "__".
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from components.common.schemas import REPLAY_PREFIX as REPLAY_ID_PREFIX
from components.common.schemas import REPLAY_STREAM as REPLAY_STREAM_PREFIX
from components.common.schemas import stream_of, table_bytes  # noqa: F401 - stream_of: the row rule stream_column vectorises
from components.common.storage import Store, join

SHARD_SCHEMA = pa.schema([
    ("id", pa.string()), ("task", pa.string()),
    ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
])


def stream_column(ids: pa.Array, tasks: pa.Array) -> pa.Array:
    """stream_of for a whole column pair, vectorised: each leading "replay:" of the id is a "replay/"."""
    leading = pc.struct_field(pc.extract_regex(ids, f"^(?P<p>(?:{REPLAY_ID_PREFIX})*)"), "p")
    prefix = pc.replace_substring(leading, REPLAY_ID_PREFIX, REPLAY_STREAM_PREFIX)
    return pc.binary_join_element_wise(prefix, tasks, "")


def stream_dir(stream: str) -> str:
    return stream.replace("/", "__")


def shard_uri(out: str, split: str, stream: str, index: int) -> str:
    return join(out, split, stream_dir(stream), f"shard-{index:05d}.parquet")


def token_count(column: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.list_value_length(column)).as_py() or 0)


@dataclass
class ShardSink:
    """Writes one shard: Parquet bytes, their sha256, upload; returns the manifest entry."""

    store: Store
    out: str  # <artifact_root>/shards
    split: str

    def __call__(self, stream: str, index: int, table: pa.Table) -> dict:
        data = table_bytes(table)
        uri = shard_uri(self.out, self.split, stream, index)
        etag = self.store.put_bytes(uri, data)
        return {"uri": uri, "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data), "etag": etag, "source_tokens": token_count(table.column("input_ids")),
                "target_tokens": token_count(table.column("labels"))}


@dataclass
class StreamWriter:
    """One stream's rows, buffered until a shard is full, then handed to the sink and dropped.

    The buffer never holds more than rows_per_shard rows: an incoming table is cut at the shard
    boundary, so memory is bounded by the shard size whatever the data size.
    """

    stream: str
    task: str
    rows_per_shard: int
    first_index: int  # shard numbers of this writer start here (partitions get disjoint ranges)
    sink: Callable[[str, int, pa.Table], dict]
    shards: list[dict] = field(default_factory=list)
    buffered_rows: int = 0
    max_buffered_rows: int = 0  # the high-water mark, checked by the tests
    _buffer: list[pa.Table] = field(default_factory=list)

    def add(self, table: pa.Table) -> None:
        start = 0
        while start < table.num_rows:
            take = min(self.rows_per_shard - self.buffered_rows, table.num_rows - start)
            self._buffer.append(table.slice(start, take))
            self.buffered_rows += take
            self.max_buffered_rows = max(self.max_buffered_rows, self.buffered_rows)
            start += take
            if self.buffered_rows == self.rows_per_shard:
                self._flush()

    def close(self) -> None:
        """Write the short last shard, if any rows are left."""
        if self.buffered_rows:
            self._flush()

    def _flush(self) -> None:
        # One chunk per column: the Parquet bytes then depend only on the rows, not on batch edges.
        table = pa.concat_tables(self._buffer).combine_chunks()
        self._buffer, self.buffered_rows = [], 0
        self.shards.append(self.sink(self.stream, self.first_index + len(self.shards), table))

    def summary(self) -> dict:
        return {"task": self.task, "rows": sum(s["rows"] for s in self.shards),
                "source_tokens": sum(s["source_tokens"] for s in self.shards),
                "target_tokens": sum(s["target_tokens"] for s in self.shards), "shards": list(self.shards)}
