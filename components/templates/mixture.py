"""Task mixing for the train split: stream weights the loader samples by, plus replay.

rate_t ∝ min(n_t, K)^(1/T) as in seqio/FLAN: the cap K stops a huge task from drowning the others,
T > 1 flattens towards uniform. Nothing is drawn here: the train split keeps every example, and the
loader samples streams by these weights at load time, so a new weighting needs no re-tokenization
(`train.loader.mixture_weights`). A stream is a task ("summarization") or a replayed task
("replay/summarization"): replay rehearses a previous run's train examples, with its own weights,
so retraining keeps old skills. The report states what the training budget will draw from each.
"""
from __future__ import annotations

import math

from components.common.config import MixtureConfig
from components.common.schemas import REPLAY_PREFIX, REPLAY_STREAM, stream_of  # noqa: F401 - re-exported


def mixture_rates(n: dict[str, int], cap: int, temperature: float) -> dict[str, float]:
    """rate_t ∝ min(n_t, cap)^(1/temperature); tasks without examples get no share."""
    weights = {t: min(c, cap) ** (1.0 / temperature) for t, c in n.items() if c > 0}
    total = sum(weights.values())
    return {t: (w / total if total else 0.0) for t, w in sorted(weights.items())}


def largest_remainder(total: int, rates: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to `total`, as close to total·rate as possible (ties by task name)."""
    if not rates:
        return {}
    quotas = {t: total * r for t, r in rates.items()}
    counts = {t: math.floor(q) for t, q in quotas.items()}
    left = total - sum(counts.values())
    for t in sorted(quotas, key=lambda t: (-(quotas[t] - counts[t]), t))[:left]:
        counts[t] += 1
    return counts


def replay_rates(replay: list[dict], old_weights: dict[str, float] | None) -> dict[str, float]:
    """Share of each old stream inside the replayed part: the old run's own stream weights (its replay
    streams included, so a chain of retrains keeps every earlier round at the weight it had), else row
    counts. Keys are the old run's streams ("summarization", "replay/summarization"); the replayed rows
    become the streams "replay/" + key."""
    present: dict[str, int] = {}
    for r in replay:
        present[stream_of(r)] = present.get(stream_of(r), 0) + 1
    if old_weights:
        kept = {s: w for s, w in old_weights.items() if s in present and w > 0}
        total = sum(kept.values())
        if total > 0:
            return {s: w / total for s, w in sorted(kept.items())}
    return {s: c / len(replay) for s, c in sorted(present.items())}


def task_of(stream: str) -> str:
    """'replay/replay/summarization' -> 'summarization'."""
    while stream.startswith(REPLAY_STREAM):
        stream = stream[len(REPLAY_STREAM):]
    return stream


def mix(train: list[dict], cfg: MixtureConfig, replay: list[dict] | None = None,
        default_total: int | None = None, old_weights: dict[str, float] | None = None) -> tuple[list[dict], dict]:
    """(every train row plus the replayed rows, sorted by id; the mixture report with stream weights).
    `replay`: a previous run's train rows, or None; `old_weights`: that run's stream weights.
    Budget: cfg.total_examples, else `default_total` (the training budget), else sum of min(n_t, K)."""
    n: dict[str, int] = {}
    for row in train:
        n[row["task"]] = n.get(row["task"], 0) + 1
    n = dict(sorted(n.items()))
    rates = mixture_rates(n, cfg.cap, cfg.temperature)
    if replay is not None and not replay and cfg.replay.ratio > 0:
        raise ValueError(f"templates.mixture.replay ({cfg.replay.examples_uri or 'from ' + str(cfg.replay.from_)}): "
                         "no train examples to replay")
    ratio = cfg.replay.ratio if replay else 0.0
    old_rates = replay_rates(replay, old_weights) if replay and ratio > 0 else {}
    if not rates:  # no new examples: replay alone (or nothing)
        ratio = 1.0 if old_rates else 0.0
    weights = {t: (1.0 - ratio) * r for t, r in rates.items()}
    weights.update({REPLAY_STREAM + t: ratio * r for t, r in old_rates.items()})

    total = cfg.total_examples or default_total or sum(min(c, cfg.cap) for c in n.values())
    replayed_n = math.floor(ratio * total + 0.5)
    counts = largest_remainder(total - replayed_n, rates)
    by_stream = largest_remainder(replayed_n, old_rates)
    replay_counts: dict[str, int] = {}  # by task, for the report
    for stream, c in by_stream.items():
        replay_counts[task_of(stream)] = replay_counts.get(task_of(stream), 0) + c
    old = [{**r, "id": REPLAY_PREFIX + r["id"], "template_kind": r.get("template_kind") or ""}
           for r in (replay or [])] if ratio > 0 else []
    rows = sorted(train + old, key=lambda r: r["id"])
    return rows, report(n, rates, counts, old, replay_counts, weights, total, cfg)


def report(n: dict[str, int], rates: dict[str, float], counts: dict[str, int], old: list[dict],
           replay_counts: dict[str, int], weights: dict[str, float], total: int, cfg: MixtureConfig) -> dict:
    """Per task: examples available, target rate, expected draws over the budget, their share, epochs."""
    new_total = sum(counts.values())
    old_n: dict[str, int] = {}
    for r in old:
        old_n[r["task"]] = old_n.get(r["task"], 0) + 1
    tasks = {}
    for t in sorted(set(n) | set(old_n)):
        c, avail, back = counts.get(t, 0), n.get(t, 0), replay_counts.get(t, 0)
        tasks[t] = {
            "available": avail, "rate": rates.get(t, 0.0), "count": c,
            "proportion": c / new_total if new_total else 0.0,  # share of the new part of the budget
            "epochs": c / avail if avail else 0.0,
            "replay_available": old_n.get(t, 0), "replayed": back,
            "replay_share": back / total if total else 0.0,
            "share": (c + back) / total if total else 0.0,  # share of everything training draws
        }
    return {"cap": cfg.cap, "temperature": cfg.temperature, "total": total, "new": new_total,
            "replayed": sum(replay_counts.values()), "replay_examples": len(old),
            "replay_ratio": weights and sum(w for s, w in weights.items() if s.startswith(REPLAY_STREAM)),
            "replay_uri": cfg.replay.examples_uri, "weights": dict(sorted(weights.items())), "tasks": tasks}
