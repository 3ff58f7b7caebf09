"""Evaluate core: candidate, base and current champion generate on the same test examples with the
same settings, and are scored with ROUGE-1/2/L/Lsum (mean F-measure x 100).

Scoring the champion here (not in register) means the promotion gate compares numbers measured on
one evaluation set, identified by `eval_set_sha256`, in one process with one code version.
"""
from __future__ import annotations

import gc
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pyarrow as pa
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.common import hf
from components.common.config import MixtuneConfig
from components.common.schemas import read_rows, write_table
from components.common.storage import Store, join, require_complete
from components.common.tracking import MODEL_URI_TAG, step_run
from components.evaluate.generation import GenerationSettings, generate
from components.evaluate.rouge import rouge

CHAMPION_ALIAS = "champion"
ROLES = ("candidate", "base", "champion")

PREDICTION_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("inputs", pa.string()),
    ("reference", pa.string()),
    ("base", pa.string()),
    ("candidate", pa.string()),
    ("champion", pa.string()),  # null when there is no champion
])



@dataclass(frozen=True)
class Champion:
    version: str
    uri: str  # an s3 prefix, or a local directory downloaded from the registry


@dataclass
class EvalResult:
    eval_uri: str
    metrics: dict  # the content of metrics.json
    mlflow_run_id: str

    def flat_metrics(self) -> dict[str, float]:
        """{"candidate_rougeL": ..., "base_rouge1": ..., "champion_rougeL": ...} (champion if any)."""
        return {f"{role}_{k}": v for role in ROLES for k, v in (self.metrics.get(role) or {}).items()}




def select_examples(rows: list[dict], max_examples: int, tasks: list[str] | None = None) -> list[dict]:
    """The first max_examples rows of the scored tasks by id: the same set for every model and run."""
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("test split has duplicate example ids")
    rows = [r for r in rows if tasks is None or r["task"] in tasks]
    chosen = sorted(rows, key=lambda r: r["id"])[:max_examples]
    if not chosen:
        raise ValueError(f"test split has no examples of tasks {tasks}: nothing to evaluate")
    return chosen


def eval_set_sha256(rows: list[dict]) -> str:
    """Content hash of (id, inputs, targets) in evaluation order: equal hashes, equal test sets."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["id"], r["inputs"], r["targets"]], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def dataset_version(store: Store, examples_uri: str) -> str:
    manifest = store.get_json(join(examples_uri, "manifest.json"))
    version = manifest.get("dataset_version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{examples_uri}/manifest.json has no dataset_version")
    return version


def find_champion(cfg: MixtuneConfig, workdir: Path) -> Champion | None:
    """The version under alias `champion` and where its files are; None before the first promotion."""
    client = MlflowClient()
    name = cfg.registry.model_name
    try:
        version = client.get_registered_model(name).aliases.get(CHAMPION_ALIAS)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if version is None:
        return None
    mv = client.get_model_version(name, str(version))
    uri = mv.tags.get(MODEL_URI_TAG) or mv.source
    if not uri.startswith("s3://"):
        # e.g. a runs:/ source: let MLflow resolve and fetch it.
        uri = mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}", dst_path=str(workdir / "champion"))
    return Champion(str(mv.version), uri)


def predict(ref: str, texts: list[str], store: Store, settings: GenerationSettings, role: str) -> list[str]:
    """Load one model (and its own tokenizer), generate, and free it before the next model."""
    model, tokenizer = hf.load_model(ref, store), hf.load_tokenizer(ref, store)
    try:
        return generate(model, tokenizer, texts, settings, desc=role)
    finally:
        del model
        gc.collect()


def run_evaluate(
    cfg: MixtuneConfig, examples_uri: str, model_uri: str, base_model_uri: str, artifact_root: str, pipeline_run: str
) -> EvalResult:
    store = Store(cfg.storage)
    require_complete(store, model_uri)
    if base_model_uri.startswith("s3://"):
        require_complete(store, base_model_uri)
    rows = select_examples(read_rows(store, join(examples_uri, "test.parquet")), cfg.evaluate.max_examples,
                           cfg.evaluate.tasks)
    version = dataset_version(store, examples_uri)
    settings = GenerationSettings(
        cfg.evaluate.batch_size, cfg.evaluate.num_beams, cfg.evaluate.max_new_tokens, cfg.model.max_source_length
    )
    texts, refs = [r["inputs"] for r in rows], [r["targets"] for r in rows]
    eval_uri = join(artifact_root, "evaluate")

    with step_run(cfg, pipeline_run, "evaluate") as run, tempfile.TemporaryDirectory() as tmp:
        champion = find_champion(cfg, Path(tmp))
        if champion is not None and champion.uri.startswith("s3://"):
            require_complete(store, champion.uri)
        refs_by_role = {"candidate": model_uri, "base": base_model_uri}
        if champion is not None:
            refs_by_role["champion"] = champion.uri
        outputs: dict[str, list[str]] = {}
        by_ref: dict[str, list[str]] = {}  # the same model under two roles generates once
        seconds: dict[str, float] = {}
        for role, ref in refs_by_role.items():
            start = time.perf_counter()
            if ref not in by_ref:
                by_ref[ref] = predict(ref, texts, store, settings, role)
            outputs[role] = by_ref[ref]
            seconds[role] = time.perf_counter() - start

        scores = {role: rouge(preds, refs) for role, preds in outputs.items()}
        metrics = {
            "candidate": scores["candidate"],
            "base": scores["base"],
            "champion": scores.get("champion"),
            "champion_version": champion.version if champion else None,
            "n_examples": len(rows),
            "eval_set_sha256": eval_set_sha256(rows),
            "dataset_version": version,
            "model_uri": model_uri,
            "base_model_uri": base_model_uri,
            "champion_uri": champion.uri if champion and champion.uri.startswith("s3://") else None,
            "scale": "mean F-measure x 100 (rouge-score, use_stemmer=True)",
            "generation": settings.as_dict(),
        }
        predictions = [
            {"id": r["id"], "inputs": r["inputs"], "reference": r["targets"], "base": outputs["base"][i],
             "candidate": outputs["candidate"][i], "champion": outputs["champion"][i] if champion else None}
            for i, r in enumerate(rows)
        ]
        # metrics.json last: register reads it, so it must never point at missing predictions.
        write_table(store, join(eval_uri, "predictions.parquet"), predictions, PREDICTION_SCHEMA)
        store.put_json(join(eval_uri, "metrics.json"), metrics)

        result = EvalResult(eval_uri, metrics, run.info.run_id)
        mlflow.log_params({
            "model_uri": model_uri, "base_model_uri": base_model_uri, "champion_version": metrics["champion_version"],
            "n_examples": len(rows), "eval_set_sha256": metrics["eval_set_sha256"], "dataset_version": version,
            **settings.as_dict(),
        })
        mlflow.log_metrics({**result.flat_metrics(), **{f"{r}_generate_seconds": s for r, s in seconds.items()}})
        mlflow.set_tag("mixtune.eval_uri", eval_uri)
        mlflow.log_dict(metrics, "evaluate/metrics.json")
    return result
