"""One source object -> one part: parse, redact PII, and compute dedup keys. Runs in worker processes.

A part is a Parquet table with one row per parsed unit: a record (`reason` null) or a quarantined row
(`reason` set, `raw` kept for a person to look at). Both are redacted before they leave the worker, so
no PII reaches S3 downstream of the raw export, the quarantine included.
"""
from __future__ import annotations

import io
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from components.common.config import MixtuneConfig, SourceConfig
from components.common.schemas import encode_fields
from components.common.storage import Store
from components.ingest import dedup
from components.ingest.catalog import read_object, sibling_name
from components.ingest.formats import parse_file
from components.ingest.pii import Redactor
from components.ingest.support import best_support, quarantine_reason

MAX_RAW_CHARS = 2000  # how much of a bad row the quarantine keeps

PART_SCHEMA = pa.schema([
    ("file", pa.string()),
    ("line", pa.int64()),
    ("key", pa.string()),
    ("rows", pa.int64()),  # input rows this unit covers (a conversation's turn rows in turns_* formats)
    ("id", pa.string()),  # "<source>:<original id>"; null when quarantined
    ("fields", pa.string()),  # canonical JSON; null when quarantined
    ("exact_key", pa.string()),
    ("signature", pa.binary()),  # MinHash values; null when near-dedup is off
    ("tasks", pa.list_(pa.string())),  # the source's `tasks`, null = every task the record can feed
    ("reason", pa.string()),  # "<category>: <detail>" when quarantined
    ("support", pa.float64()),  # the best summary's support in its dialogue (support.py); null = not judged
    ("raw", pa.string()),
])


def source_name(spec: SourceConfig, file_name: str) -> str:
    return spec.name or file_name.rstrip("/").rsplit("/", 1)[-1].split(".")[0]


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "…"


def process_object(cfg: MixtuneConfig, spec: SourceConfig, name: str) -> tuple[bytes, dict]:
    """Parse one object into part bytes plus its counts {rows, records, quarantined, pii_<type>, seconds}."""
    started = time.perf_counter()
    store = Store(cfg.storage) if name.startswith("s3://") else None
    data = read_object(name, store)
    t_read = time.perf_counter()
    units = parse_file(spec, name, data, cfg.data, lambda other: read_object(sibling_name(name, other), store))
    t_parse = time.perf_counter()
    spent = Counter()  # seconds per stage, for the benchmark's rows/s table
    redactor = Redactor(cfg.data.pii) if (spec.redact_pii and cfg.data.pii.enabled) else None
    src = source_name(spec, name)
    pii: Counter = Counter()
    cols: dict[str, list] = {f.name: [] for f in PART_SCHEMA}
    for u in units:
        raw = _truncate(u.raw)
        fields, error, best = u.fields, u.error, None
        if error is None:  # judged on the raw text, before redaction turns names into placeholders
            best = best_support(fields)
            error = quarantine_reason(best, cfg.data.summary_support)
            fields = fields if error is None else None  # quarantined: its raw row is kept (and redacted)
        t = time.perf_counter()
        if redactor is not None:  # a kept row stores its fields, a quarantined one its raw text
            if fields is not None:
                fields, found = redactor.redact_fields(fields)
            else:
                raw, found = redactor.redact(raw)
            pii.update(found)
        spent["pii"] += time.perf_counter() - t
        ok = error is None
        cols["file"].append(name)
        cols["line"].append(u.line)
        cols["key"].append(u.key)
        cols["rows"].append(u.rows)
        cols["id"].append(f"{src}:{u.id}" if ok else None)
        cols["fields"].append(encode_fields(fields) if ok else None)
        t = time.perf_counter()
        text = dedup.dedup_text(fields) if ok else ""
        cols["exact_key"].append(dedup.text_key(text) if ok else None)
        sig = dedup.signature(text, cfg.data.dedup) if ok else None
        cols["signature"].append(dedup.signature_bytes(sig) if sig is not None else None)
        spent["dedup_keys"] += time.perf_counter() - t
        cols["tasks"].append(list(spec.tasks) if ok and spec.tasks is not None else None)
        cols["reason"].append(error)
        cols["support"].append(round(best[0], 4) if best is not None else None)
        cols["raw"].append(None if ok else raw)
    buf = io.BytesIO()
    pq.write_table(pa.table(cols, schema=PART_SCHEMA), buf, compression="zstd")
    counts = {
        "rows": sum(cols["rows"]),
        "records": sum(1 for r in cols["reason"] if r is None),
        "quarantined_rows": sum(n for n, r in zip(cols["rows"], cols["reason"]) if r is not None),
        **{f"pii_{k}": v for k, v in sorted(pii.items())},
        "seconds": round(time.perf_counter() - started, 3),
        "seconds_read": round(t_read - started, 3),
        "seconds_parse": round(t_parse - t_read, 3),
        **{f"seconds_{k}": round(v, 3) for k, v in spent.items()},
    }
    return buf.getvalue(), counts


def process_object_json(cfg_json: str, spec_json: str, name: str) -> tuple[bytes, dict]:
    """Picklable entry for process pools: configs cross as JSON."""
    return process_object(MixtuneConfig.model_validate_json(cfg_json), SourceConfig.model_validate_json(spec_json), name)
