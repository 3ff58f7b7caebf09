"""Infer core: summarize the dialogues of an ingested dataset with a registered model version.

The model comes from the registry (`infer.model`: an alias such as `champion`, or a version number),
so what runs is whatever the gate last promoted, and every summary names the version that wrote it.
Every record read ends in exactly one place: summarized, or skipped with a reason
(`read = summarized + skipped` is checked). summaries.parquet, skipped.parquet, then manifest.json last.
"""
from __future__ import annotations

import gc
import hashlib
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pyarrow as pa

from components.common import hf
from components.common.config import MixtuneConfig
from components.common.generation import GenerationSettings, build_prompt, check_prompt, generate
from components.common.mlflow_model import generation_settings
from components.common.registry import ModelRef, resolve
from components.common.schemas import SPLITS, read_records, table_bytes
from components.common.storage import Store, join, require_complete
from components.common.tracking import step_run

MANIFEST_SCHEMA = 1

SUMMARY_SCHEMA = pa.schema([
    ("id", pa.string()),  # the record id ("<source>:<original id>")
    ("source", pa.string()),
    ("dialogue", pa.string()),  # as ingest stored it: redacted, "Speaker: text" lines
    ("summary", pa.string()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
])
SKIPPED_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("reason", pa.string())])


@dataclass
class InferResult:
    summaries_uri: str  # <artifact_root>/infer: summaries.parquet, skipped.parquet, manifest.json
    model_name: str
    model_version: str
    manifest: dict  # the content of manifest.json
    mlflow_run_id: str


def read_dataset(store: Store, records_uri: str) -> tuple[list[dict], str]:
    """Every record of every split of an ingested dataset (sorted by id), and its version.

    The manifest is written last by ingest, so its presence means the splits are complete; their
    bytes must match the hashes it lists."""
    try:
        manifest = store.get_json(join(records_uri, "manifest.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{records_uri}: no manifest.json; not a complete ingested dataset") from None
    records = []
    for split in [s for s in SPLITS if s in manifest.get("sha256", {})]:
        uri = join(records_uri, f"{split}.parquet")
        if hashlib.sha256(store.get_bytes(uri)).hexdigest() != manifest["sha256"][split]:
            raise ValueError(f"{uri}: content does not match the sha256 in its manifest")
        rows = read_records(store, uri)
        if len(rows) != manifest["split_rows"][split]:
            raise ValueError(f"{uri}: {len(rows)} rows, manifest says {manifest['split_rows'][split]}")
        records += rows
    return sorted(records, key=lambda r: r["id"]), str(manifest.get("dataset_version", ""))


def skip_reason(record: dict) -> str | None:
    """Why a record cannot be summarized, or None when it has a dialogue."""
    if "dialogue" not in record["fields"]:
        return "no dialogue"
    dialogue = record["fields"]["dialogue"]
    if not isinstance(dialogue, str):
        return "dialogue is not text"
    if not dialogue.strip():
        return "empty dialogue"
    return None


def select_dialogues(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(records with a dialogue, skipped rows with their reason)."""
    chats, skipped = [], []
    for r in records:
        reason = skip_reason(r)
        if reason is None:
            chats.append(r)
        else:
            skipped.append({"id": r["id"], "source": r["source"], "reason": reason})
    return chats, skipped


def find_model(cfg: MixtuneConfig, workdir: Path) -> ModelRef:
    """The version infer.model names; a missing alias is an error that says what to do."""
    name, wanted = cfg.registry.model_name, cfg.infer.model
    ref = resolve(name, wanted, download_to=workdir)
    if ref is None:
        raise LookupError(f"no version has alias {wanted!r} in {name}: promote one first (mixtune promote)")
    return ref


def summarize(ref: ModelRef, prompts: list[str], store: Store, settings: GenerationSettings) -> tuple[list[str], int]:
    """(summaries, prompts cut at max_source_length): load the version's model and tokenizer and generate."""
    model, tokenizer = hf.load_model(ref.uri, store), hf.load_tokenizer(ref.uri, store)
    try:
        lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
        truncated = sum(n > settings.max_source_length for n in lengths)
        return generate(model, tokenizer, prompts, settings, desc=f"infer v{ref.version}"), truncated
    finally:
        del model
        gc.collect()


def metric_key(reason: str) -> str:
    return "skipped_" + re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")


def clear_previous(store: Store, out: str) -> None:
    """A rerun of the step: remove the old manifest first, so no reader sees it next to new files."""
    store.delete(join(out, "manifest.json"))
    store.delete_prefix(out)


def run_infer(cfg: MixtuneConfig, records_uri: str, artifact_root: str, pipeline_run: str) -> InferResult:
    started = time.perf_counter()
    check_prompt(cfg.infer.prompt)
    store = Store(cfg.storage)
    records, dataset_version = read_dataset(store, records_uri)
    chats, skipped = select_dialogues(records)
    if len(records) != len(chats) + len(skipped):
        raise AssertionError("record counts do not reconcile")  # a bug, never bad input
    reasons = dict(Counter(s["reason"] for s in skipped).most_common())
    if not chats:
        raise ValueError(f"{records_uri}: no record has a dialogue, nothing to summarize (skipped: {reasons})")
    settings = generation_settings(cfg)  # the registered MLflow model generates with the same
    out = join(artifact_root, "infer")

    with step_run(cfg, pipeline_run, "infer") as run, tempfile.TemporaryDirectory() as tmp:
        ref = find_model(cfg, Path(tmp))
        if ref.uri.startswith("s3://"):
            require_complete(store, ref.uri)
        prompts = [build_prompt(cfg.infer.prompt, r["fields"]["dialogue"]) for r in chats]
        gen_start = time.perf_counter()
        summaries, truncated = summarize(ref, prompts, store, settings)
        gen_seconds = time.perf_counter() - gen_start

        rows = [{"id": r["id"], "source": r["source"], "dialogue": r["fields"]["dialogue"], "summary": s,
                 "model_name": ref.name, "model_version": ref.version} for r, s in zip(chats, summaries)]
        clear_previous(store, out)
        data = table_bytes(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA))
        store.put_bytes(join(out, "summaries.parquet"), data)
        skipped_data = table_bytes(pa.Table.from_pylist(skipped, schema=SKIPPED_SCHEMA))
        store.put_bytes(join(out, "skipped.parquet"), skipped_data)
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "model": {"name": ref.name, "version": ref.version, "uri": ref.uri, "requested": cfg.infer.model},
            "records_uri": records_uri,
            "dataset_version": dataset_version,
            "counts": {"read": len(records), "summarized": len(rows), "skipped": len(skipped)},
            "skipped_reasons": reasons,
            "sha256": {"summaries.parquet": hashlib.sha256(data).hexdigest(),
                       "skipped.parquet": hashlib.sha256(skipped_data).hexdigest()},
            "prompt": cfg.infer.prompt,
            "prompts_truncated": truncated,
            "generation": settings.as_dict(),
            "generate_seconds": round(gen_seconds, 3),
            "summaries_per_second": round(len(rows) / gen_seconds, 3) if gen_seconds > 0 else None,
            "seconds": round(time.perf_counter() - started, 3),
            "pipeline_run": pipeline_run,
            "mlflow_run_id": run.info.run_id,
        }
        store.put_json(join(out, "manifest.json"), manifest)  # last: readers wait for it

        mlflow.log_params({"model_name": ref.name, "model_version": ref.version, "model_requested": cfg.infer.model,
                           "model_uri": ref.uri, "records_uri": records_uri, "dataset_version": dataset_version,
                           "prompt": cfg.infer.prompt, **settings.as_dict()})
        mlflow.log_metrics({"records_read": len(records), "summarized": len(rows), "skipped": len(skipped),
                            "prompts_truncated": truncated, "generate_seconds": gen_seconds,
                            **({"summaries_per_second": manifest["summaries_per_second"]}
                               if manifest["summaries_per_second"] is not None else {}),
                            **{metric_key(k): v for k, v in reasons.items()}})
        mlflow.set_tags({"mixtune.model_version": ref.version, "mixtune.summaries_uri": out})
        mlflow.log_dict(manifest, "infer/manifest.json")
    return InferResult(out, ref.name, ref.version, manifest, run.info.run_id)
