"""Evaluate core: the candidate, the base model and the current champion generate on the same frozen
evaluation set with the same settings; every task is scored with its own metrics, with bootstrap
intervals and paired deltas; the gate's verdict and an HTML report come out with the numbers.

Scoring the champion here (not in register) means the promotion gate compares numbers measured on
one evaluation set, identified by `eval_set_sha256`, in one process with one code version.
Layout under <artifact_root>/evaluate: eval_set.parquet, predictions.parquet, report.html and
metrics.json, written last (register reads it, so it never points at missing files).
"""
from __future__ import annotations

import gc
import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import mlflow
import pyarrow as pa

from components.common import hf
from components.common.config import MixtuneConfig
from components.common.lineage import gated_eval_set
from components.common.gate import evaluate_gate
from components.common.registry import CHAMPION, resolve
from components.common.schemas import EXAMPLE_SCHEMA, read_rows, table_bytes, write_table
from components.common.storage import Store, join, require_complete
from components.common.tracking import step_run
from components.evaluate.evalset import (eval_set_sha256, read_eval_source, references, select_examples,
                                         with_gated_set)
from components.common.generation import GenerationSettings, generate
from components.common.mlflow_model import generation_settings
from components.evaluate.faithfulness import ExampleCheck
from components.evaluate.report import render_report
from components.evaluate.scoring import flat_metrics, score_tasks

ROLES = ("candidate", "base", "champion")
SCHEMA_VERSION = 2

PREDICTION_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("task", pa.string()),
    ("inputs", pa.string()),
    ("references", pa.list_(pa.string())),
    ("base", pa.string()),
    ("candidate", pa.string()),
    ("champion", pa.string()),  # null when there is no champion
    ("base_score", pa.float64()),  # per-example score, 0..100, higher is better
    ("candidate_score", pa.float64()),
    ("champion_score", pa.float64()),
    # Faithfulness checks (tasks in evaluate.faithfulness.tasks; null elsewhere): the facts the dialogue does
    # not support, as written, and why the output is degenerate (null when it is not).
    *[(f"{role}_unsupported", pa.list_(pa.string())) for role in ("base", "candidate", "champion")],
    *[(f"{role}_degenerate", pa.string()) for role in ("base", "candidate", "champion")],
])


@dataclass(frozen=True)
class Champion:
    version: str
    uri: str  # an s3 prefix, or a local directory downloaded from the registry
    tags: dict = field(default_factory=dict)


@dataclass
class EvalResult:
    eval_uri: str
    metrics: dict  # the content of metrics.json
    mlflow_run_id: str
    report_html: str = ""

    def primary(self, role: str) -> float | None:
        task = self.metrics["tasks"][self.metrics["primary_task"]]
        scores = task["scores"].get(role)
        return None if scores is None else scores[task["primary"]]


def dataset_version(store: Store, examples_uri: str) -> str:
    manifest = store.get_json(join(examples_uri, "manifest.json"))
    version = manifest.get("dataset_version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{examples_uri}/manifest.json has no dataset_version")
    return version


def find_champion(cfg: MixtuneConfig, workdir: Path) -> Champion | None:
    """The version under alias `champion` and where its files are; None before the first promotion."""
    ref = resolve(cfg.registry.model_name, CHAMPION, download_to=workdir / "champion")
    return None if ref is None else Champion(ref.version, ref.uri, ref.tags)


class EvalRows(NamedTuple):
    rows: list[dict]        # the examples every model is scored on
    source_uri: str         # where they came from
    tasks: list[str]        # the tasks scored
    new_ids: frozenset[str]  # the ids from this run's own split (not from the champion's gated set)


def evaluation_rows(cfg: MixtuneConfig, store: Store, examples_uri: str, champion: Champion | None) -> EvalRows:
    """This run's test split (or the frozen evaluate.eval_set_uri), plus, with include_champion_set, the set
    the champion was gated on."""
    ev = cfg.evaluate
    source, source_uri = read_eval_source(store, examples_uri, ev.eval_set_uri)
    new_ids = frozenset(r["id"] for r in source)
    tasks = list(ev.tasks)
    gated_uri = gated_eval_set(store, champion.tags) if champion and ev.include_champion_set else None
    if gated_uri and not ev.eval_set_uri:
        source, tasks = with_gated_set(source, tasks, read_rows(store, gated_uri))
        source_uri = f"{source_uri} + {gated_uri}"
    rows = select_examples(source, ev.max_examples, tasks, per_source=ev.per_source)
    return EvalRows(rows, source_uri, tasks, new_ids)


def predict(ref: str, texts: list[str], store: Store, settings: GenerationSettings, role: str) -> list[str]:
    """Load one model (and its own tokenizer), generate, and free it before the next model."""
    model, tokenizer = hf.load_model(ref, store), hf.load_tokenizer(ref, store)
    try:
        return generate(model, tokenizer, texts, settings, desc=role)
    finally:
        del model
        gc.collect()


def train_history(store: Store, model_uri: str) -> list[dict] | None:
    """The loss curve of the train step that wrote model_uri (<train>/model -> <train>/train_log.json)."""
    log_uri = join(model_uri.rstrip("/").rsplit("/", 1)[0], "train_log.json")
    try:
        return store.get_json(log_uri).get("history")
    except FileNotFoundError:
        return None


def prediction_rows(rows: list[dict], outputs: dict[str, list[str]], scores: dict[str, list[float]],
                    checks: dict[str, list[ExampleCheck | None]]) -> list[dict]:
    def check(role: str, i: int) -> ExampleCheck | None:
        return checks[role][i] if role in checks else None

    return [{"id": r["id"], "task": r["task"], "inputs": r["inputs"], "references": references(r),
             **{role: outputs[role][i] if role in outputs else None for role in ROLES},
             **{f"{role}_score": scores[role][i] if role in scores else None for role in ROLES},
             **{f"{role}_unsupported": [f.text for f in c.unsupported] if (c := check(role, i)) else None
                for role in ROLES},
             **{f"{role}_degenerate": c.degenerate if (c := check(role, i)) else None for role in ROLES}}
            for i, r in enumerate(rows)]


def run_evaluate(
    cfg: MixtuneConfig, examples_uri: str, model_uri: str, base_model_uri: str, artifact_root: str, pipeline_run: str
) -> EvalResult:
    store = Store(cfg.storage)
    require_complete(store, model_uri)
    if base_model_uri.startswith("s3://"):
        require_complete(store, base_model_uri)
    ev = cfg.evaluate
    version = dataset_version(store, examples_uri)
    settings = generation_settings(cfg, batch_size=ev.batch_size)  # what infer and serving use too
    eval_uri = join(artifact_root, "evaluate")
    store.delete(join(eval_uri, "metrics.json"))  # a retry unpublishes first: metrics.json is written last

    with step_run(cfg, pipeline_run, "evaluate") as run, tempfile.TemporaryDirectory() as tmp:
        champion = find_champion(cfg, Path(tmp))
        if champion is not None and champion.uri.startswith("s3://"):
            require_complete(store, champion.uri)
        rows, source_uri, _, new_ids = evaluation_rows(cfg, store, examples_uri, champion)
        texts = [r["inputs"] for r in rows]
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

        tasks, example_scores, example_checks = score_tasks(cfg, rows, outputs, new_ids)
        # The evaluated set itself, frozen next to the scores: a later run can pin it (eval_set_uri).
        eval_set = [{k: r.get(k) for k in EXAMPLE_SCHEMA.names} | {"references": references(r)} for r in rows]
        eval_set_bytes = table_bytes(pa.Table.from_pylist(eval_set, schema=EXAMPLE_SCHEMA))
        store.put_bytes(join(eval_uri, "eval_set.parquet"), eval_set_bytes)
        metrics = {
            "schema": SCHEMA_VERSION,
            "tasks": tasks,
            "primary_task": cfg.primary_task,
            "primary_metric": tasks[cfg.primary_task]["primary"],
            "confidence": ev.bootstrap.confidence,
            "resamples": ev.bootstrap.resamples,
            "champion_version": champion.version if champion else None,
            "n_examples": len(rows),
            "eval_set_sha256": eval_set_sha256(rows),
            "eval_set_uri": join(eval_uri, "eval_set.parquet"),
            "eval_set_source": source_uri,
            "eval_set_file_sha256": hashlib.sha256(eval_set_bytes).hexdigest(),
            "dataset_version": version,
            "examples_uri": examples_uri,  # lineage: register tags the version with what it was trained on
            "model_uri": model_uri,
            "base_model_uri": base_model_uri,
            "champion_uri": champion.uri if champion and champion.uri.startswith("s3://") else None,
            "generation": settings.as_dict(),  # the same settings infer and the served model use
            "faithfulness": cfg.evaluate.faithfulness.model_dump(),
            "generate_seconds": seconds,
        }
        metrics["gate"] = evaluate_gate(cfg.registry.gate, metrics).as_dict()
        predictions = prediction_rows(rows, outputs, example_scores, example_checks)
        html = render_report(metrics, predictions, train_history(store, model_uri), worst=ev.worst_examples,
                             title=f"mixtune evaluation: {pipeline_run}")
        write_table(store, join(eval_uri, "predictions.parquet"), predictions, PREDICTION_SCHEMA)
        store.put_bytes(join(eval_uri, "report.html"), html.encode())
        store.put_json(join(eval_uri, "metrics.json"), metrics)  # last

        _log_to_mlflow(metrics, eval_uri, html, seconds, settings, source_uri)
    return EvalResult(eval_uri, metrics, run.info.run_id, html)


def _log_to_mlflow(metrics: dict, eval_uri: str, html: str, seconds: dict, settings: GenerationSettings,
                   source_uri: str) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    mlflow.log_params({
        "model_uri": metrics["model_uri"], "base_model_uri": metrics["base_model_uri"],
        "champion_version": metrics["champion_version"], "n_examples": metrics["n_examples"],
        "eval_set_sha256": metrics["eval_set_sha256"], "dataset_version": metrics["dataset_version"],
        "eval_set_source": source_uri, "tasks": ",".join(metrics["tasks"]), "primary_task": metrics["primary_task"],
        "primary_metric": metrics["primary_metric"], **settings.as_dict(),
    })
    mlflow.log_metrics({**flat_metrics(metrics["tasks"]), "gate_promote": float(metrics["gate"]["promote"]),
                        **{f"{r}_generate_seconds": s for r, s in seconds.items()}})
    mlflow.set_tags({"mixtune.eval_uri": eval_uri, "mixtune.gate": "promote" if metrics["gate"]["promote"] else "keep",
                     "mixtune.gate_reason": metrics["gate"]["reason"][:4000]})
    # The evaluation set as an MLflow dataset: its digest is the content hash, its source the frozen file.
    mlflow.log_input(MetaDataset(resolve_dataset_source(metrics["eval_set_uri"]), name="mixtune-eval-set",
                                 digest=metrics["eval_set_sha256"][:36]), context="evaluation")
    mlflow.log_dict(metrics, "evaluate/metrics.json")
    mlflow.log_text(html, "evaluate/report.html")
