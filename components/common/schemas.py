"""The tables passed between steps, as Arrow schemas, and Parquet I/O on S3.

records   (ingest -> templates):  one normalised dialogue with its reference target.
examples  (templates -> shards, evaluate): one (instruction, target) pair.
quarantine (ingest): a row that could not be used, with where it came from and why.
"""
from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from components.common.storage import Store

SPLITS = ("train", "validation", "test")

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # stable id: "<source>:<original id>"
        ("source", pa.string()),
        ("task", pa.string()),
        ("dialogue", pa.string()),  # "Speaker: text" lines
        ("target", pa.string()),
        ("split", pa.string()),
    ]
)

EXAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # "<record id>#<variant>"
        ("record_id", pa.string()),
        ("task", pa.string()),
        ("template_id", pa.string()),
        ("inputs", pa.string()),
        ("targets", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
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
