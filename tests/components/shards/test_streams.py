"""Stream routing and the per-stream shard writer, without S3: the sink records what it is given."""
from __future__ import annotations

import random

import pyarrow as pa

from components.shards.streams import SHARD_SCHEMA, StreamWriter, shard_uri, stream_column, stream_dir, stream_of


def rows_table(start: int, n: int) -> pa.Table:
    return pa.Table.from_pylist([{"id": f"x:{i}", "task": "qa", "input_ids": [i, 1], "labels": [1]}
                                 for i in range(start, start + n)], schema=SHARD_SCHEMA)


def test_stream_of_a_row_and_a_column_agree():
    rows = [{"id": "chat:1#0", "task": "summarization"}, {"id": "replay:chat:1#0", "task": "summarization"},
            {"id": "replay:replay:old#1", "task": "intent"}, {"id": "x:replay:1", "task": "ner"}]
    # A replay of a replay keeps its generation, so each earlier round keeps its own weight.
    expected = ["summarization", "replay/summarization", "replay/replay/intent", "ner"]
    assert [stream_of(r) for r in rows] == expected
    column = stream_column(pa.array([r["id"] for r in rows]), pa.array([r["task"] for r in rows]))
    assert column.to_pylist() == expected
    assert stream_dir("replay/summarization") == "replay__summarization"
    assert shard_uri("s3://b/r/shards", "train", "replay/qa", 7) == "s3://b/r/shards/train/replay__qa/shard-00007.parquet"


def test_writer_buffers_at_most_one_shard_and_cuts_exact_shards():
    written: list[tuple[int, pa.Table]] = []
    writer = StreamWriter("qa", "qa", rows_per_shard=50, first_index=10,
                          sink=lambda stream, index, table: written.append((index, table)) or {"rows": table.num_rows})
    rng, start = random.Random(0), 0
    for _ in range(40):  # batches smaller and larger than a shard
        n = rng.choice([1, 7, 49, 50, 51, 130])
        writer.add(rows_table(start, n))
        start += n
        assert writer.buffered_rows < 50  # a full buffer is written at once
    writer.close()
    assert writer.max_buffered_rows <= 50
    assert [i for i, _ in written] == list(range(10, 10 + len(written)))
    assert all(t.num_rows == 50 for _, t in written[:-1]) and 0 < written[-1][1].num_rows <= 50
    ids = [r for _, t in written for r in t.column("id").to_pylist()]
    assert ids == [f"x:{i}" for i in range(start)]  # every row once, in arrival order
    assert all(t.column("id").num_chunks == 1 for _, t in written)  # bytes independent of batch edges


def test_an_empty_stream_writes_nothing():
    written = []
    writer = StreamWriter("qa", "qa", 5, 0, lambda *a: written.append(a) or {})
    writer.add(rows_table(0, 0))
    writer.close()
    assert written == [] and writer.summary()["rows"] == 0
