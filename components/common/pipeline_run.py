"""The pipeline's parent MLflow run carries the headline params and metrics, so MLflow's runs table
compares pipeline runs at the top level (each step's own numbers stay on its nested run).

The register step writes them, as the last step on a cluster and locally alike: the config it was given
holds the params, its metrics.json the scores and the gate, and the step runs under the same parent the
rows, tokens/s and wall times.
"""
from __future__ import annotations

import time

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from components.common import tracking
from components.common.config import MixtuneConfig

# (step, metric on its run) -> metric on the parent run
STEP_METRICS = {("ingest", "rows_read"): "rows_read", ("ingest", "rows_kept"): "rows_kept",
                ("ingest", "rows_quarantined"): "rows_quarantined", ("ingest", "rows_duplicate"): "rows_duplicate",
                ("templates", "replay_examples"): "replay_examples", ("train", "tokens_per_second"): "train_tokens_per_second",
                ("train", "final_loss"): "train_final_loss", ("train", "train_seconds"): "train_seconds"}


def headline_params(cfg: MixtuneConfig, metrics: dict) -> dict[str, str]:
    t, m = cfg.train, cfg.templates
    replay = m.mixture.replay
    return {
        "base_model": str(cfg.model.base), "dataset_version": str(metrics.get("dataset_version")),
        "max_steps": str(t.max_steps), "learning_rate": str(t.learning_rate), "micro_batch_size": str(t.micro_batch_size),
        "num_processes": str(t.num_processes), "zero_stage": str(t.zero_stage), "packing": str(t.packing),
        "templates_kinds": ",".join(m.kinds), "mixture_temperature": str(m.mixture.temperature),
        "mixture_cap": str(m.mixture.cap), "replay": str(replay.from_ or replay.examples_uri or "none"),
        "replay_ratio": str(replay.ratio), "primary": f"{metrics.get('primary_task')}/{metrics.get('primary_metric')}",
        "eval_examples": str(metrics.get("n_examples")), "sources": ",".join(s.name or s.path for s in cfg.data.sources),
    }


def headline_metrics(metrics: dict, promoted: bool, version: str) -> dict[str, float]:
    out = {"promoted": float(promoted), "model_version": float(version)}
    task = metrics.get("tasks", {}).get(metrics.get("primary_task"), {})
    key = task.get("primary")
    for role, scores in (task.get("scores") or {}).items():
        if scores and scores.get(key) is not None:
            out[f"{role}_{key}"] = float(scores[key])
    return out


def step_numbers(client: MlflowClient, experiment_id: str, pipeline_run: str) -> dict[str, float]:
    """Rows, tokens/s and each step's wall time, read off the step runs of this pipeline run."""
    runs = client.search_runs([experiment_id], f"tags.`{tracking.PIPELINE_TAG}` = '{pipeline_run}' and "
                                               f"tags.`{tracking.ROLE_TAG}` = 'step'")
    out: dict[str, float] = {}
    for r in runs:
        step = r.data.tags.get("mixtune.step", "")
        for (s, key), name in STEP_METRICS.items():
            if s == step and key in r.data.metrics:
                out[name] = r.data.metrics[key]
        if r.info.end_time and r.info.start_time:
            out[f"seconds_{tracking.step_run_name(step)}"] = (r.info.end_time - r.info.start_time) / 1000
    return out


def log_headline(cfg: MixtuneConfig, pipeline_run: str, metrics: dict, promoted: bool, version: str) -> None:
    """Params and metrics on the parent run; a rerun of the step logs the same params (MLflow refuses a
    param changed in place, so an unchanged value is skipped)."""
    exp_id = tracking.setup(cfg)
    client = MlflowClient()
    parent = tracking.parent_run_id(cfg, pipeline_run)
    have = client.get_run(parent).data.params
    params = {k: v[:6000] for k, v in headline_params(cfg, metrics).items() if k not in have}
    values = {**headline_metrics(metrics, promoted, version), **step_numbers(client, exp_id, pipeline_run)}
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in values.items()],
                     params=[Param(k, v) for k, v in params.items()])
