"""metrics.json (schema 2) written by hand for gate and register tests: per task, the primary metric of
each model and a symmetric paired-delta interval of half-width `spread` around the difference."""
from __future__ import annotations


def task_scores(candidate: float, base: float, champion: float | None, spread: float = 1.0,
                primary: str = "rougeL", lower_is_better: tuple[str, ...] = ()) -> dict:
    def delta(other: float | None):
        if other is None:
            return None
        d = candidate - other
        return {"mean": d, "low": d - spread, "high": d + spread}

    def scores(x: float | None):
        return None if x is None else {primary: x, "other": x + 1}

    return {"family": "rouge", "primary": primary, "lower_is_better": list(lower_is_better), "n": 50,
            "scores": {"candidate": scores(candidate), "base": scores(base), "champion": scores(champion)},
            "ci": {"candidate": [candidate - 2, candidate + 2], "base": [base - 2, base + 2],
                   "champion": None if champion is None else [champion - 2, champion + 2]},
            "delta": {"champion": delta(champion), "base": delta(base)}}


def gate_metrics(tasks: dict[str, dict], champion_version: str | None = None, primary_task: str | None = None,
                 model_uri: str = "s3://b/runs/r/model") -> dict:
    primary_task = primary_task or next(iter(tasks))
    return {"schema": 2, "tasks": tasks, "primary_task": primary_task,
            "primary_metric": tasks[primary_task]["primary"], "confidence": 0.95, "resamples": 1000,
            "champion_version": champion_version, "n_examples": 50 * len(tasks), "eval_set_sha256": "ab" * 32,
            "dataset_version": "dv-1", "model_uri": model_uri, "base_model_uri": "s3://b/base"}
