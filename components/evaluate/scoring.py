"""Per-task (and, for a task fed by several sources, per-source) scores, intervals and paired deltas
for every model evaluate ran.

Each task is scored with its metric family (components/evaluate/metrics.py). The primary metric
gets a bootstrap interval per model and a paired-bootstrap interval of (candidate - other) for the
champion and the base model: the gate reads those, never a bare difference of two means.
"""
from __future__ import annotations

from components.common.config import MixtuneConfig
from components.evaluate import metrics as M
from components.evaluate.evalset import by_source, by_task, references


def primary_for(cfg: MixtuneConfig, task: str, family: str) -> str:
    """The gate's metric on the primary task, the family's primary metric elsewhere."""
    gate_metric = cfg.registry.gate.metric
    if task == cfg.primary_task and gate_metric is not None:
        if gate_metric not in M.metric_names(family):
            raise ValueError(f"registry.gate.metric {gate_metric!r} is not a metric of task {task!r} "
                             f"({family}: {list(M.metric_names(family))})")
        return gate_metric
    return M.primary_metric(family)


def score_tasks(cfg: MixtuneConfig, rows: list[dict], outputs: dict[str, list[str]]
                ) -> tuple[dict[str, dict], dict[str, list[float]]]:
    """(metrics.json "tasks", per-example scores by role in row order)."""
    boot = cfg.evaluate.bootstrap
    tasks: dict[str, dict] = {}
    example_scores = {role: [0.0] * len(rows) for role in outputs}
    for task, idx in by_task(rows).items():
        family = M.family_of(task, cfg.evaluate.metrics)
        metric = primary_for(cfg, task, family)
        refs = [references(rows[i]) for i in idx]
        stats = {role: M.example_stats(family, [preds[i] for i in idx], refs) for role, preds in outputs.items()}
        for role, s in stats.items():
            for i, v in zip(idx, M.example_scores(family, s)):
                example_scores[role][i] = float(v)

        def ci(role: str) -> list[float]:
            return list(M.bootstrap_ci(family, stats[role], metric, boot.resamples, boot.confidence, boot.seed))

        def delta(other: str) -> dict:
            return M.paired_delta(family, stats["candidate"], stats[other], metric, boot.resamples,
                                  boot.confidence, boot.seed)

        has_champion = "champion" in outputs
        tasks[task] = {
            "family": family, "primary": metric, "lower_is_better": M.lower_is_better(family), "n": len(idx),
            "scores": {role: M.aggregate(family, stats[role]) if role in stats else None
                       for role in ("candidate", "base", "champion")},
            "ci": {role: ci(role) if role in stats else None for role in ("candidate", "base", "champion")},
            "delta": {"champion": delta("champion") if has_champion else None, "base": delta("base")},
        }
        sources = by_source(rows, idx)
        if len(sources) > 1:  # one source: its slice is the task itself
            tasks[task]["sources"] = {src: source_slice(family, metric, stats, pos, boot)
                                      for src, pos in sources.items()}
    return tasks, example_scores


def source_slice(family: str, metric: str, stats: dict, positions: list[int], boot) -> dict:
    """One source's rows of a task: the primary metric per model and the candidate's paired deltas, so
    the gate can see old chat logs get worse while the task as a whole improves on new ones."""
    sub = {role: s[positions] for role, s in stats.items()}
    return {
        "n": len(positions),
        "scores": {role: M.aggregate(family, sub[role])[metric] if role in sub else None
                   for role in ("candidate", "base", "champion")},
        "delta": {other: M.paired_delta(family, sub["candidate"], sub[other], metric, boot.resamples,
                                        boot.confidence, boot.seed) if other in sub else None
                  for other in ("champion", "base")},
    }


def flat_metrics(tasks: dict[str, dict]) -> dict[str, float]:
    """{"summarization/candidate_rougeL": ..., "summarization/delta_champion_rougeL": ...} for MLflow."""
    out: dict[str, float] = {}
    for task, t in tasks.items():
        for role, scores in t["scores"].items():
            for k, v in (scores or {}).items():
                out[f"{task}/{role}_{k}"] = float(v)
        for other, d in t["delta"].items():
            if d is not None:
                out[f"{task}/delta_{other}_{t['primary']}"] = float(d["mean"])
        for src, sl in (t.get("sources") or {}).items():  # "summarization/tweetsumm/candidate_rougeL"
            out |= {f"{task}/{src}/{role}_{t['primary']}": float(v) for role, v in sl["scores"].items() if v is not None}
            out |= {f"{task}/{src}/delta_{other}_{t['primary']}": float(d["mean"])
                    for other, d in sl["delta"].items() if d is not None}
    return out
