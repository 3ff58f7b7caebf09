"""Task mixing for the train split: examples-proportional with a cap and a temperature, plus replay.

rate_t ∝ min(n_t, K)^(1/T) as in seqio/FLAN: the cap K stops a huge task from drowning the others,
T > 1 flattens towards uniform. Counts are largest-remainder rounded so they sum to the mixture size
exactly; a task asked for more examples than it has repeats in whole passes (small tasks upsampled).
Replay mixes a fraction of a previous run's train examples back in so retraining keeps old skills.
"""
from __future__ import annotations

import math
import random

from components.common.config import MixtureConfig

REPLAY_PREFIX = "replay:"
REPEAT_SEP = "@"  # "<id>@2": the third pass over a task's examples, so ids stay unique


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


def draw(rows: list[dict], count: int, rng: random.Random) -> list[dict]:
    """`count` rows: a sample without replacement, or whole passes plus a sampled remainder."""
    if count <= 0 or not rows:
        return []
    rows = sorted(rows, key=lambda r: r["id"])  # independent of the order rows arrived in
    passes, rest = divmod(count, len(rows))
    out = [r if p == 0 else {**r, "id": f"{r['id']}{REPEAT_SEP}{p}"} for p in range(passes) for r in rows]
    tail = sorted(rng.sample(range(len(rows)), rest))
    out += [rows[i] if passes == 0 else {**rows[i], "id": f"{rows[i]['id']}{REPEAT_SEP}{passes}"} for i in tail]
    return out


def mix(train: list[dict], cfg: MixtureConfig, replay: list[dict] | None = None,
        default_total: int | None = None) -> tuple[list[dict], dict]:
    """The shuffled train mixture and its report. `replay`: a previous mixture's train rows, or None.
    Size: cfg.total_examples, else `default_total` (the caller's training budget), else sum of min(n_t, K)."""
    by_task: dict[str, list[dict]] = {}
    for row in train:
        by_task.setdefault(row["task"], []).append(row)
    n = {t: len(rows) for t, rows in sorted(by_task.items())}
    rates = mixture_rates(n, cfg.cap, cfg.temperature)
    total = cfg.total_examples or default_total or sum(min(c, cfg.cap) for c in n.values())
    replayed_n = math.floor(cfg.replay.ratio * total + 0.5) if replay is not None else 0
    if replay is not None and replayed_n and not replay:
        raise ValueError(f"templates.mixture.replay.examples_uri {cfg.replay.examples_uri}: "
                         "no train examples to replay")
    new_total = total - replayed_n if rates else 0
    counts = largest_remainder(new_total, rates)

    out: list[dict] = []
    for t, c in counts.items():
        out += draw(by_task[t], c, random.Random(f"{cfg.seed}|{t}"))
    old = draw(replay or [], replayed_n, random.Random(f"{cfg.seed}|replay"))
    out += [{**r, "id": REPLAY_PREFIX + r["id"], "template_kind": r.get("template_kind") or ""} for r in old]
    out.sort(key=lambda r: r["id"])
    random.Random(f"{cfg.seed}|shuffle").shuffle(out)
    return out, report(n, rates, counts, old, len(out), cfg)


def report(n: dict[str, int], rates: dict[str, float], counts: dict[str, int], replayed: list[dict],
           final: int, cfg: MixtureConfig) -> dict:
    """Per task: available examples, target rate, drawn count, its effective proportion, epochs, replay."""
    new_total = sum(counts.values())
    old: dict[str, int] = {}
    for r in replayed:
        old[r["task"]] = old.get(r["task"], 0) + 1
    tasks = {}
    for t in sorted(set(n) | set(old)):
        c, avail, back = counts.get(t, 0), n.get(t, 0), old.get(t, 0)
        tasks[t] = {
            "available": avail, "rate": rates.get(t, 0.0), "count": c,
            "proportion": c / new_total if new_total else 0.0,  # effective share of the new mixture
            "epochs": c / avail if avail else 0.0,
            "replayed": back, "replay_share": back / final if final else 0.0,
            "share": (c + back) / final if final else 0.0,  # share of the final train set
        }
    return {"cap": cfg.cap, "temperature": cfg.temperature, "seed": cfg.seed, "total": final,
            "new": new_total, "replayed": len(replayed), "replay_ratio": cfg.replay.ratio if replayed else 0.0,
            "replay_uri": cfg.replay.examples_uri, "tasks": tasks}
