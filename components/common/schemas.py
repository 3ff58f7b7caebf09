"""The tables passed between steps, as Arrow schemas, and Parquet I/O on S3.

records   (ingest -> templates):  one normalised source row; its task fields as a JSON object
           (dialogue, summary, summaries, topic, review, rating, sentence, tokens, tags, entities, java, cs).
examples  (templates -> shards, evaluate): one (instruction, target) pair.
quarantine (ingest): a row that could not be used, with where it came from and why.
"""
from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from components.common.storage import Store

SPLITS = ("train", "validation", "test")

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # stable id: "<source>:<original id>"
        ("source", pa.string()),
        ("split", pa.string()),
        ("fields", pa.string()),  # JSON object; a dialogue is "Speaker: text" lines
        ("tasks", pa.list_(pa.string())),  # the tasks the source may feed; null = every task it can
    ]
)

EXAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # "<record id>#<variant>"
        ("record_id", pa.string()),
        ("task", pa.string()),
        ("template_id", pa.string()),
        ("template_kind", pa.string()),  # zero_shot | few_shot | options | inverse
        ("inputs", pa.string()),
        ("targets", pa.string()),
        ("references", pa.list_(pa.string())),  # validation/test: targets + alternative references; train: null
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),  # 1-based line, when the format has lines
        ("key", pa.string()),  # record key (array index, conversation id), when it has none
        ("reason", pa.string()),  # "<category>: <detail>"
        ("raw", pa.string()),
    ]
)


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_table(store: Store, uri: str, rows: list[dict], schema: pa.Schema) -> str:
    """Write rows as Parquet to uri; returns the sha256 of the bytes written."""
    data = table_bytes(pa.Table.from_pylist(rows, schema=schema))
    store.put_bytes(uri, data)
    return hashlib.sha256(data).hexdigest()


def read_rows(store: Store, uri: str) -> list[dict]:
    return pq.read_table(io.BytesIO(store.get_bytes(uri))).to_pylist()


def read_records(store: Store, uri: str) -> list[dict]:
    """Records with their `fields` decoded into a dict."""
    rows = read_rows(store, uri)
    for r in rows:
        r["fields"] = json.loads(r["fields"])
    return rows


def encode_fields(fields: dict) -> str:
    """Canonical JSON of a record's fields: sorted keys, so equal records hash equal."""
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# Streams: what the training loader mixes. The templates step gives replayed examples a "replay:" id;
# the new examples of task T form stream "T", the replayed ones "replay/T". A replay of a replay keeps
# its generation: "replay:replay:<id>" is stream "replay/replay/T", so each earlier round keeps its weight.
REPLAY_PREFIX = "replay:"
REPLAY_STREAM = "replay/"


def replay_depth(example_id: str) -> int:
    """How many replays deep an example is: 0 for a new one."""
    depth = 0
    while example_id.startswith(REPLAY_PREFIX, depth * len(REPLAY_PREFIX)):
        depth += 1
    return depth


def stream_of(row: dict) -> str:
    """The loader stream of an example row: its task, or replay/<task> (replay/replay/<task>, ...) for a
    replayed example."""
    return REPLAY_STREAM * replay_depth(row["id"]) + row["task"]
