"""metrics.json (schema 2) written by hand for gate and register tests: per task, the primary metric of
each model and a symmetric paired-delta interval of half-width `spread` around the difference; a ROUGE task
also gets faithfulness rates (unsupported facts, degenerate outputs), by default a faithful candidate."""
from __future__ import annotations


FAITHFUL = {"candidate": (2.0, 0.0), "base": (6.0, 10.0), "champion": (2.0, 0.0)}  # (unsupported, degenerate)


def faithfulness(rates: dict[str, tuple[float, float] | None], spread: float = 1.0) -> dict:
    """The "faithfulness" block of a task: role -> (unsupported %, degenerate %), None for a missing model."""
    def scores(role):
        r = rates.get(role)
        return None if r is None else {"unsupported": r[0], "name_coverage": 90.0, "degenerate": r[1]}

    def delta(metric: int, other: str):
        if rates.get(other) is None:
            return None
        d = rates["candidate"][metric] - rates[other][metric]
        return {"mean": d, "low": d - spread, "high": d + spread}

    return {"n": 50, "lower_is_better": ["unsupported", "degenerate"],
            "scores": {role: scores(role) for role in ("candidate", "base", "champion")},
            "ci": {role: None if rates.get(role) is None else
                   {k: [max(0.0, v - 2), v + 2] for k, v in scores(role).items()}
                   for role in ("candidate", "base", "champion")},
            "delta": {m: {other: delta(i, other) for other in ("champion", "base")}
                      for i, m in ((0, "unsupported"), (None, "name_coverage"), (1, "degenerate")) if i is not None}
            | {"name_coverage": {"champion": None, "base": None}}}


def task_scores(candidate: float, base: float, champion: float | None, spread: float = 1.0,
                primary: str = "rougeL", lower_is_better: tuple[str, ...] = (),
                faithful: dict | None = None) -> dict:
    def delta(other: float | None):
        if other is None:
            return None
        d = candidate - other
        return {"mean": d, "low": d - spread, "high": d + spread}

    def scores(x: float | None):
        return None if x is None else {primary: x, "other": x + 1}

    out = {"family": "rouge", "primary": primary, "lower_is_better": list(lower_is_better), "n": 50,
            "scores": {"candidate": scores(candidate), "base": scores(base), "champion": scores(champion)},
            "ci": {"candidate": [candidate - 2, candidate + 2], "base": [base - 2, base + 2],
                   "champion": None if champion is None else [champion - 2, champion + 2]},
            "delta": {"champion": delta(champion), "base": delta(base)}}
    if primary == "rougeL":
        rates = dict(faithful or FAITHFUL)
        if champion is None:
            rates["champion"] = None
        out["faithfulness"] = faithfulness(rates)
    return out


def gate_metrics(tasks: dict[str, dict], champion_version: str | None = None, primary_task: str | None = None,
                 model_uri: str = "s3://b/runs/r/model") -> dict:
    primary_task = primary_task or next(iter(tasks))
    return {"schema": 2, "tasks": tasks, "primary_task": primary_task,
            "primary_metric": tasks[primary_task]["primary"], "confidence": 0.95, "resamples": 1000,
            "champion_version": champion_version, "n_examples": 50 * len(tasks), "eval_set_sha256": "ab" * 32,
            "dataset_version": "dv-1", "model_uri": model_uri, "base_model_uri": "s3://b/base"}
