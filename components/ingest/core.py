"""Ingest core: every input row ends up kept, quarantined (with file, line and reason) or dropped
as a duplicate, and the counts add up. Splits come from a hash of the record id, so a record never
changes split when new data arrives. The dataset version is a hash of the content written."""
from __future__ import annotations

import glob
import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.common.config import MixtuneConfig, SourceConfig
from components.common.schemas import QUARANTINE_SCHEMA, RECORD_SCHEMA, SPLITS, write_table
from components.common.storage import Store, join
from components.common.tracking import step_run
from components.ingest.formats import PARSERS, RowError

TASK = "summarization"
MAX_RAW_CHARS = 2000  # how much of a bad row the quarantine keeps


@dataclass
class IngestResult:
    records_uri: str
    dataset_version: str
    counts: dict[str, int] = field(default_factory=dict)
    split_rows: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


def split_of(record_id: str, validation: float, test: float) -> str:
    """Deterministic split from a stable hash of the id (not Python's salted hash())."""
    u = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big") / 2**64
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def source_files(spec: SourceConfig, store: Store) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file a source names: an s3:// key or prefix, a path, or a glob."""
    if spec.path.startswith("s3://"):
        objects = [u for u, _ in store.list(spec.path)] or [spec.path]
        return [(u, store.get_bytes(u)) for u in objects]
    paths = sorted(glob.glob(spec.path, recursive=True)) if glob.has_magic(spec.path) else [spec.path]
    files = [p for p in paths if Path(p).is_file()]
    if not files:
        raise FileNotFoundError(f"source {spec.path!r}: no readable file matches")
    return [(p, Path(p).read_bytes()) for p in files]


def source_name(spec: SourceConfig, file_name: str) -> str:
    return spec.name or Path(file_name.rstrip("/")).stem.split(".")[0]


def _raw(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "…"


def ingest_rows(cfg: MixtuneConfig, files: list[tuple[SourceConfig, str, bytes]]):
    """Parse and validate every line; returns (records, quarantine, counts)."""
    d = cfg.data
    records, quarantine, seen = [], [], set()
    counts = Counter(read=0, kept=0, quarantined=0, duplicates=0)
    for spec, name, data in files:
        parse = PARSERS[spec.format]
        src = source_name(spec, name)
        for lineno, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue  # blank lines are not rows
            counts["read"] += 1
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise RowError(f"not valid UTF-8 (byte {e.start})") from None
                if "\x00" in line:
                    raise RowError("contains NUL bytes (binary data)")
                rec_id, dialogue, target, turns = parse(line)
                if "\x00" in dialogue or "\x00" in target:
                    raise RowError("contains NUL bytes (binary data)")
                if turns < d.min_turns:
                    raise RowError(f"dialogue has {turns} turn(s), fewer than {d.min_turns}")
                if len(dialogue) > d.max_dialogue_chars:
                    raise RowError(f"dialogue has {len(dialogue)} chars, over {d.max_dialogue_chars}")
                if len(target) > d.max_target_chars:
                    raise RowError(f"target has {len(target)} chars, over {d.max_target_chars}")
            except RowError as e:
                counts["quarantined"] += 1
                text = raw.decode("utf-8", errors="replace")
                quarantine.append({"file": name, "line": lineno, "reason": str(e), "raw": _raw(text)})
                continue
            full_id = f"{src}:{rec_id}"
            if full_id in seen:
                counts["duplicates"] += 1
                continue
            seen.add(full_id)
            counts["kept"] += 1
            split = split_of(full_id, d.validation_fraction, d.test_fraction)
            records.append({"id": full_id, "source": src, "task": TASK, "dialogue": dialogue,
                            "target": target, "split": split})
    return records, quarantine, counts


def write_dataset(cfg: MixtuneConfig, artifact_root: str, store: Store) -> IngestResult:
    files = [(spec, name, data) for spec in cfg.data.sources for name, data in source_files(spec, store)]
    records, quarantine, counts = ingest_rows(cfg, files)
    if counts["read"] != counts["kept"] + counts["quarantined"] + counts["duplicates"]:
        raise AssertionError(f"row counts do not reconcile: {dict(counts)}")  # a bug, never bad input
    if not records:
        raise ValueError(f"no usable rows in {[n for _, n, _ in files]}: {dict(counts)}")

    out = join(artifact_root, "ingest")
    hashes, split_rows = {}, {}
    for split in SPLITS:
        rows = sorted((r for r in records if r["split"] == split), key=lambda r: r["id"])
        split_rows[split] = len(rows)
        hashes[split] = write_table(store, join(out, f"{split}.parquet"), rows, RECORD_SCHEMA)
    write_table(store, join(out, "quarantine.parquet"), quarantine, QUARANTINE_SCHEMA)
    # Content-addressed: the same rows give the same version, whatever the run.
    version = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
    reasons = Counter(q["reason"].split(":")[0] for q in quarantine)
    result = IngestResult(out, version, dict(counts), split_rows, dict(reasons))
    manifest = {**asdict(result), "sha256": hashes, "files": [n for _, n, _ in files]}
    store.put_json(join(out, "manifest.json"), manifest)  # last: readers wait for it
    return result


def run_ingest(cfg: MixtuneConfig, artifact_root: str, pipeline_run: str) -> IngestResult:
    """The step: write the dataset to S3 and record counts and version in MLflow."""
    import mlflow

    with step_run(cfg, pipeline_run, "ingest"):
        result = write_dataset(cfg, artifact_root, Store(cfg.storage))
        mlflow.log_params({f"source_{i}": f"{s.format}:{s.path}" for i, s in enumerate(cfg.data.sources)})
        mlflow.log_metrics({f"rows_{k}": v for k, v in result.counts.items()})
        mlflow.log_metrics({f"split_{k}": v for k, v in result.split_rows.items()})
        mlflow.set_tag("mixtune.dataset_version", result.dataset_version)
    return result
