"""Per-task (and, for a task fed by several sources, per-source) scores, intervals and paired deltas
for every model evaluate ran.

Each task is scored with its metric family (components/evaluate/metrics.py). The primary metric
gets a bootstrap interval per model and a paired-bootstrap interval of (candidate - other) for the
champion and the base model: the gate reads those, never a bare difference of two means.
"""
from __future__ import annotations

from components.common.config import MixtuneConfig
from components.evaluate import faithfulness as F
from components.evaluate import metrics as M
from components.evaluate.evalset import by_source, by_task, references, source_of
from components.evaluate.faithfulness import ExampleCheck

ROLES = ("candidate", "base", "champion")
FAITHFULNESS = "faithfulness"


def primary_for(cfg: MixtuneConfig, task: str, family: str) -> str:
    """The gate's metric on the primary task, the family's primary metric elsewhere."""
    gate_metric = cfg.registry.gate.metric
    if task == cfg.primary_task and gate_metric is not None:
        if gate_metric not in M.metric_names(family):
            raise ValueError(f"registry.gate.metric {gate_metric!r} is not a metric of task {task!r} "
                             f"({family}: {list(M.metric_names(family))})")
        return gate_metric
    return M.primary_metric(family)


def score_tasks(cfg: MixtuneConfig, rows: list[dict], outputs: dict[str, list[str]],
                new_ids: frozenset[str] | None = None
                ) -> tuple[dict[str, dict], dict[str, list[float]], dict[str, list[ExampleCheck | None]]]:
    """(metrics.json "tasks", per-example scores by role in row order, per-example faithfulness checks by
    role in row order: None for rows of a task that is not checked). new_ids: the examples from this run's own
    data; a task scored on others too (the champion's gated set) gets a "new_data" slice of them."""
    boot = cfg.evaluate.bootstrap
    tasks: dict[str, dict] = {}
    example_scores = {role: [0.0] * len(rows) for role in outputs}
    example_checks: dict[str, list[ExampleCheck | None]] = {role: [None] * len(rows) for role in outputs}
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
        faithful = None
        if task in cfg.evaluate.faithfulness.tasks:
            faithful = {}
            for role, preds in outputs.items():
                checks = [F.check(preds[i], rows[i]["inputs"], references(rows[i]), cfg.evaluate.faithfulness)
                          for i in idx]
                faithful[role] = F.example_stats(checks)
                for i, c in zip(idx, checks):
                    example_checks[role][i] = c
            tasks[task]["faithfulness"] = faithfulness_scores(faithful, boot)
        if len(sources) > 1:  # one source: its slice is the task itself
            tasks[task]["sources"] = {src: source_slice(family, metric, stats, pos, boot, faithful)
                                      for src, pos in sources.items()}
        new = [k for k, i in enumerate(idx) if rows[i]["id"] in (new_ids or ())]
        if new and len(new) < len(idx):  # the gate's improve_on: new_data reads it
            names = sorted({source_of(rows[idx[k]]["id"]) for k in new})
            tasks[task]["new_data"] = {"sources": names, **source_slice(family, metric, stats, new, boot)}
    return tasks, example_scores, example_checks


def _deltas(family: str, stats: dict, metric: str, boot) -> dict:
    return {other: M.paired_delta(family, stats["candidate"], stats[other], metric, boot.resamples, boot.confidence,
                                  boot.seed) if other in stats else None for other in ("champion", "base")}


def faithfulness_scores(stats: dict, boot) -> dict:
    """Every faithfulness rate per model, its interval, and the candidate's paired deltas per rate (positive
    unsupported/degenerate deltas are worse, as for any lower-is-better metric)."""
    names = M.metric_names(FAITHFULNESS)
    return {
        "n": len(next(iter(stats.values()))),
        "lower_is_better": M.lower_is_better(FAITHFULNESS),
        "scores": {role: M.aggregate(FAITHFULNESS, stats[role]) if role in stats else None for role in ROLES},
        "ci": {role: {m: list(M.bootstrap_ci(FAITHFULNESS, stats[role], m, boot.resamples, boot.confidence,
                                             boot.seed)) for m in names} if role in stats else None
               for role in ROLES},
        "delta": {m: _deltas(FAITHFULNESS, stats, m, boot) for m in names},
    }


def source_slice(family: str, metric: str, stats: dict, positions: list[int], boot,
                 faithful: dict | None = None) -> dict:
    """One source's rows of a task: the primary metric per model and the candidate's paired deltas, so
    the gate can see old chat logs get worse while the task as a whole improves on new ones; with the
    faithfulness rates too, so an old source whose summaries start inventing facts shows."""
    sub = {role: s[positions] for role, s in stats.items()}
    out = {
        "n": len(positions),
        "scores": {role: M.aggregate(family, sub[role])[metric] if role in sub else None for role in ROLES},
        "delta": _deltas(family, sub, metric, boot),
    }
    if faithful is not None:
        out["faithfulness"] = faithfulness_scores({role: s[positions] for role, s in faithful.items()}, boot)
    return out


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
        faithful = t.get("faithfulness")
        if faithful:  # "summarization/candidate_unsupported", "summarization/delta_champion_unsupported"
            out |= _flat_faithfulness(f"{task}/", faithful)
        for src, sl in (t.get("sources") or {}).items():  # "summarization/tweetsumm/candidate_rougeL"
            if sl.get("faithfulness"):
                out |= _flat_faithfulness(f"{task}/{src}/", sl["faithfulness"])
            out |= {f"{task}/{src}/{role}_{t['primary']}": float(v) for role, v in sl["scores"].items() if v is not None}
            out |= {f"{task}/{src}/delta_{other}_{t['primary']}": float(d["mean"])
                    for other, d in sl["delta"].items() if d is not None}
    return out


def _flat_faithfulness(prefix: str, faithful: dict) -> dict[str, float]:
    out = {f"{prefix}{role}_{k}": float(v) for role, scores in faithful["scores"].items() for k, v in (scores or {}).items()}
    out |= {f"{prefix}delta_{other}_{k}": float(d["mean"]) for k, deltas in faithful["delta"].items()
            for other, d in deltas.items() if d is not None}
    return out
