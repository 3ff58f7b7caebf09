"""Ingest core: sources -> one immutable, content-addressed dataset version of redacted records.

Every input row ends in exactly one place: kept, quarantined (file, line or key, reason, raw row) or
dropped as a duplicate, and `rows_read = rows_kept + rows_quarantined + rows_duplicate` is checked.
Splits come from a hash of the record id, so a record never changes split when new data arrives.
Source objects seen before (same size and ETag) are not read again: their parts are reused (catalog.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from components.common.config import MixtuneConfig, SourceConfig
from components.common.schemas import QUARANTINE_SCHEMA, RECORD_SCHEMA, SPLITS, table_bytes
from components.common.storage import Store, join
from components.ingest import dedup
from components.ingest.catalog import Catalog, SourceObject, list_objects, part_uri, source_fingerprint
from components.ingest.support import weak_sources
from components.ingest.worker import process_object, process_object_json, source_name


@dataclass
class IngestResult:
    records_uri: str  # <root>/datasets/<version>: immutable
    dataset_version: str
    report_uri: str  # <artifact_root>/ingest: this run's counts and quarantine
    counts: dict[str, int] = field(default_factory=dict)
    split_rows: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    pii: dict[str, int] = field(default_factory=dict)
    files_read: list[str] = field(default_factory=list)
    files_reused: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


CREDENTIAL_PREFIXES = ("AWS_", "MLFLOW_")


def credential_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(CREDENTIAL_PREFIXES)}


def use_credentials(env: dict[str, str]) -> None:
    """Pool initializer: exactly the caller's S3/MLflow variables, none left from an older caller."""
    for key in [k for k in os.environ if k.startswith(CREDENTIAL_PREFIXES)]:
        del os.environ[key]
    os.environ.update(env)


def split_of(record_id: str, validation: float, test: float) -> str:
    """Deterministic split from a stable hash of the id (not Python's salted hash())."""
    u = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big") / 2**64
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def _workers(cfg: MixtuneConfig, jobs: int) -> int:
    # CPUs this process may run on (not the node's count); in a pod with a CPU quota set data.workers.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(jobs, cfg.data.workers or cores))


def parse_sources(cfg: MixtuneConfig, store: Store) -> tuple[list[pa.Table], dict]:
    """Parts for every source object: new objects parsed (in parallel), known ones reused."""
    plan: list[tuple[SourceConfig, Catalog, SourceObject]] = []
    reused: list[tuple[str, dict]] = []  # (object name, catalog entry)
    source_of: dict[str, str] = {}  # object name -> the source name its rows carry
    for spec in cfg.data.sources:
        catalog = Catalog(store, source_fingerprint(spec, cfg))
        for obj in list_objects(spec, store):
            source_of[obj.name] = source_name(spec, obj.name)
            entry = catalog.lookup(obj) if cfg.data.incremental else None
            if entry is None:
                plan.append((spec, catalog, obj))
            else:
                reused.append((obj.name, entry))
    results: list[tuple[bytes, dict]] = []
    if len(plan) > 1 and _workers(cfg, len(plan)) > 1:
        # forkserver: workers start clean (no inherited MLflow/boto3 threads) and share one import.
        ctx = multiprocessing.get_context("forkserver")
        # The forkserver keeps the environment of its first use; credentials come from this call's.
        with ProcessPoolExecutor(_workers(cfg, len(plan)), mp_context=ctx, initializer=use_credentials,
                                 initargs=(credential_env(),)) as pool:
            cfg_json = cfg.model_dump_json()
            futures = [pool.submit(process_object_json, cfg_json, s.model_dump_json(), o.name) for s, _, o in plan]
            results = [f.result() for f in futures]
    else:
        results = [process_object(cfg, s, o.name) for s, _, o in plan]
    tables, counts = [], {}
    for (spec, catalog, obj), (data, c) in zip(plan, results):
        uri = part_uri(store, catalog.fingerprint, obj)
        store.put_if_absent(uri, data)  # content-addressed and shared: an existing part has these bytes
        catalog.record(obj, uri, c)
        tables.append(pq.read_table(io.BytesIO(data)))
        counts[obj.name] = c
    for catalog in {id(c): c for _, c, _ in plan}.values():
        catalog.save()
    for name, entry in reused:
        tables.append(pq.read_table(io.BytesIO(store.get_bytes(entry["part"]))))
        counts[name] = entry["counts"]
    return tables, {"read": [o.name for _, _, o in plan], "reused": [n for n, _ in reused], "per_file": counts,
                    "source_of": source_of}


def build_records(cfg: MixtuneConfig, units: list[dict]):
    """Dedup and split the parsed units; returns (records, quarantine, counts)."""
    counts = Counter(rows_read=0, rows_kept=0, rows_quarantined=0, rows_duplicate=0,
                     records_kept=0, duplicates_id=0, duplicates_exact=0, duplicates_near=0)
    quarantine, candidates, by_id = [], [], {}
    for u in units:
        counts["rows_read"] += u["rows"]
        if u["reason"] is not None:
            counts["rows_quarantined"] += u["rows"]
            quarantine.append({k: u[k] for k in ("file", "line", "key", "reason", "raw")})
        elif u["id"] in by_id:  # the same id twice: the first in (file, line) order is kept
            counts["rows_duplicate"] += u["rows"]
            counts["duplicates_id"] += 1
        else:
            by_id[u["id"]] = u
            sig = u["signature"]
            candidates.append((u["id"], u["exact_key"],
                               dedup.signature_from_bytes(sig, cfg.data.dedup) if sig is not None else None))
    dups = dedup.find_duplicates(candidates, cfg.data.dedup)
    records = []
    for rid, u in sorted(by_id.items()):
        if rid in dups:
            counts["rows_duplicate"] += u["rows"]
            counts[f"duplicates_{dups[rid][1]}"] += 1
            continue
        counts["rows_kept"] += u["rows"]
        counts["records_kept"] += 1
        split = split_of(rid, cfg.data.validation_fraction, cfg.data.test_fraction)
        records.append({"id": rid, "source": rid.split(":", 1)[0], "split": split, "fields": u["fields"],
                        "tasks": u["tasks"]})
    if counts["rows_read"] != counts["rows_kept"] + counts["rows_quarantined"] + counts["rows_duplicate"]:
        raise AssertionError(f"row counts do not reconcile: {dict(counts)}")  # a bug, never bad input
    counts["records_quarantined"] = len(quarantine)
    return records, quarantine, counts


def dataset_version(records: list[dict]) -> str:
    """Content address of the records: the same rows (with their splits) give the same version."""
    h = hashlib.sha256()
    for r in records:  # already sorted by id
        h.update(f"{r['id']}\t{r['split']}\t{r['tasks']}\t{r['fields']}\n".encode())
    return h.hexdigest()[:16]


def write_dataset(cfg: MixtuneConfig, artifact_root: str, store: Store) -> IngestResult:
    t0 = time.perf_counter()
    tables, files = parse_sources(cfg, store)
    t1 = time.perf_counter()
    units = pa.concat_tables(tables).sort_by([("file", "ascending"), ("line", "ascending"),
                                               ("key", "ascending")]).to_pylist() if tables else []
    records, quarantine, counts = build_records(cfg, units)
    t2 = time.perf_counter()
    report = join(artifact_root, "ingest")
    store.delete(join(report, "report.json"))  # a retry unpublishes first: report.json is written last
    store.put_bytes(join(report, "quarantine.parquet"),
                    table_bytes(pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA)))
    broken = weak_sources(units, files["source_of"], cfg.data.summary_support)
    if broken:
        raise ValueError("refusing this batch: " + "; ".join(broken)
                         + f". The rows are in {join(report, 'quarantine.parquet')}")
    if not records:
        raise ValueError(f"no usable rows in {files['read'] + files['reused']}: {dict(counts)}")

    version = dataset_version(records)
    out = join(store.root, "datasets", version)
    split_rows = {s: sum(1 for r in records if r["split"] == s) for s in SPLITS}
    if not store.exists(join(out, "manifest.json")):
        # Immutable and shared by every run that reads the same rows: conditional puts, so two runs
        # writing one version at once never replace each other's objects (the bytes are equal anyway).
        hashes = {}
        for split in SPLITS:
            data = table_bytes(pa.Table.from_pylist([r for r in records if r["split"] == split], schema=RECORD_SCHEMA))
            store.put_if_absent(join(out, f"{split}.parquet"), data)
            hashes[split] = hashlib.sha256(data).hexdigest()
        store.put_if_absent(join(out, "manifest.json"), json.dumps({  # last: readers wait for it
            "dataset_version": version, "split_rows": split_rows, "sha256": hashes,
            "sources": [s.model_dump(mode="json") for s in cfg.data.sources],
            "objects": sorted(files["read"] + files["reused"])}, indent=2, sort_keys=True).encode())
    cpu = Counter()  # CPU seconds per stage inside the parse workers, over the files read this run
    for name in files["read"]:
        cpu.update({f"cpu_{k[8:]}": v for k, v in files["per_file"][name].items() if k.startswith("seconds_")})
    pii = Counter()
    for c in files["per_file"].values():
        pii.update({k[4:]: v for k, v in c.items() if k.startswith("pii_")})
    reasons = Counter(q["reason"].split(":")[0] for q in quarantine)
    result = IngestResult(out, version, report, dict(counts), split_rows, dict(reasons.most_common()),
                          dict(sorted(pii.items())), files["read"], files["reused"],
                          {"parse": round(t1 - t0, 2), "dedup_split": round(t2 - t1, 2),
                           "write": round(time.perf_counter() - t2, 2),
                           **{k: round(v, 2) for k, v in sorted(cpu.items())}})
    store.put_json(join(report, "report.json"), {**asdict(result), "per_file": files["per_file"]})
    return result


def run_ingest(cfg: MixtuneConfig, artifact_root: str, pipeline_run: str) -> IngestResult:
    """The step: write the dataset to S3 and record counts and version in MLflow."""
    import mlflow

    from components.common.tracking import step_run

    with step_run(cfg, pipeline_run, "ingest"):
        result = write_dataset(cfg, artifact_root, Store(cfg.storage))
        mlflow.log_params({f"source_{i}": f"{s.format}:{s.path}" for i, s in enumerate(cfg.data.sources)})
        mlflow.log_metrics({k: v for k, v in result.counts.items()})
        mlflow.log_metrics({f"split_{k}": v for k, v in result.split_rows.items()})
        mlflow.log_metrics({f"pii_{k}": v for k, v in result.pii.items()})
        mlflow.log_metrics({"files_read": len(result.files_read), "files_reused": len(result.files_reused)})
        mlflow.log_dict(asdict(result), "ingest_report.json")
        mlflow.set_tags({"mixtune.dataset_version": result.dataset_version,
                         "mixtune.dataset_uri": result.records_uri})
    return result
