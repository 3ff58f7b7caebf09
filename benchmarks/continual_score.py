"""Scores for benchmarks/continual.py: every round's candidate against the first champion (R0) on the examples
both were scored on, per task and source, from evaluate's predictions; the goal line; the per-round table.
Pure functions of the rounds' summaries and predictions (tests/benchmarks/test_continual.py)."""
from __future__ import annotations

from components.evaluate import metrics as M
from components.evaluate.evalset import source_of

TOLERANCE = 1.0  # points an old source of the champion may lose against R0
OLD_SOURCES = (("summarization", "chats"), ("review_rating", "alexa"), ("summarization", "dialogsum"))
NEW_SOURCE = ("summarization", "tweetsumm")


def first_champion_outputs(rounds: dict[str, list[dict]], preds: dict[str, dict[str, list[dict]]]) -> dict[str, dict]:
    """id -> R0's output (and the row), from R0's own evaluation and from R1's, where R0 was the champion."""
    out = {r["id"]: {"row": r, "text": r["candidate"]} for r in preds["replay"]["R0"]}
    r0_version = (rounds["replay"][0]["summary"]["registered"] or {}).get("version")
    for arm, rs in rounds.items():
        for r in rs[1:]:
            if str(r["summary"]["evaluation"].get("champion_version")) != str(r0_version):
                continue
            for row in preds[arm][r["round"]]:
                out.setdefault(row["id"], {"row": row, "text": row["champion"]})
    return out


def metric_of(task: str) -> tuple[str, str]:
    family = M.family_of(task, {})
    return family, ("rouge1" if family == "rouge" else M.primary_metric(family))


def score_against_first(rounds: dict[str, list[dict]], preds: dict[str, dict[str, list[dict]]], boot) -> dict:
    """arm -> round -> "task/source" -> {n, metric, first, value, delta{mean, low, high}}: the round's
    candidate minus R0, paired on the examples both generated for."""
    first = first_champion_outputs(rounds, preds)
    out: dict[str, dict[str, dict]] = {}
    for arm, rs in rounds.items():
        out[arm] = {}
        for r in rs[1:]:
            rows = [row for row in preds[arm][r["round"]] if row["id"] in first]
            groups: dict[str, list[dict]] = {}
            for row in rows:
                groups.setdefault(f"{row['task']}/{source_of(row['id'])}", []).append(row)
            scores = {}
            for key, group in sorted(groups.items()):
                family, metric = metric_of(group[0]["task"])
                refs = [list(g["references"]) for g in group]
                cand = M.example_stats(family, [g["candidate"] for g in group], refs)
                base = M.example_stats(family, [first[g["id"]]["text"] for g in group], refs)
                scores[key] = {"n": len(group), "metric": metric, "first": M.aggregate(family, base)[metric],
                               "value": M.aggregate(family, cand)[metric],
                               "delta": M.paired_delta(family, cand, base, metric, boot.resamples, boot.confidence,
                                                       boot.seed)}
            out[arm][r["round"]] = scores
    return out


def champion_scores(rounds: list[dict], scored: dict[str, dict]) -> dict[str, dict]:
    """round -> the champion's scores against R0 after that round: the candidate's if it was promoted, else
    those of the last promoted round (R0 itself: zero change)."""
    out, current = {}, None
    for r in rounds[1:]:
        if r["promoted"]:
            current = scored[r["round"]]
        out[r["round"]] = current
    return out


def goal_verdict(rounds: dict[str, list[dict]], scored: dict[str, dict]) -> dict:
    replay = rounds["replay"]
    honest = [r for r in replay[1:] if r["round"] != "P"]
    poisoned = [r for r in replay if r["round"] == "P"]
    promoted = all(r["promoted"] for r in [replay[0]] + honest)
    refused = bool(poisoned) and not poisoned[0]["promoted"] and \
        poisoned[0]["champion_after"] == poisoned[0]["champion_before"]
    champ = champion_scores(replay, scored["replay"])
    drops = [(name, key, s[key]["delta"]["mean"]) for name, s in champ.items() if s
             for key in (f"{t}/{src}" for t, src in OLD_SOURCES) if key in s]
    holds = bool(drops) and all(d >= -TOLERANCE for _, _, d in drops)
    new_key = "/".join(NEW_SOURCE)
    last = honest[-1]["round"] if honest else None
    gain = ((champ.get(last) or {}).get(new_key) or {}).get("delta", {}).get("mean")
    base_gain, base_drops = None, []
    if "no-replay" in scored:
        base_rounds = [r for r in rounds["no-replay"][1:]]
        base_gain = (scored["no-replay"].get(base_rounds[-1]["round"], {}).get(new_key) or {}).get("delta", {}).get("mean")
        base_drops = [(r["round"], key, s["delta"]) for r in base_rounds
                      for key, s in scored["no-replay"][r["round"]].items()
                      if tuple(key.split("/")) in OLD_SOURCES]
    keeps_gain = gain is not None and base_gain is not None and (base_gain <= 0 or gain >= 0.5 * base_gain)
    visibly = any(d["mean"] < -TOLERANCE and d["high"] < 0 for _, _, d in base_drops)
    met = promoted and holds and keeps_gain and refused and visibly
    worst = min(drops, key=lambda x: x[2]) if drops else None
    line = (f"goal (every honest round promoted; old sources of the champion within {TOLERANCE:g} point of R0; "
            f"TweetSumm gain >= half the replay-off gain; poisoned round refused; replay off visibly drops): "
            f"{'MET' if met else 'NOT MET'}; promoted: {promoted}; old sources hold: {holds}"
            + (f" (worst {worst[1]} {worst[2]:+.2f} after {worst[0]})" if worst else "")
            + f"; TweetSumm gain {fmt(gain)} vs replay off {fmt(base_gain)}: {keeps_gain}; poisoned refused: {refused}; "
            f"replay off drops: {visibly}"
            + (f" (worst {min(base_drops, key=lambda x: x[2]['mean'])[1]} "
               f"{min(d['mean'] for _, _, d in base_drops):+.2f})" if base_drops else ""))
    return {"met": met, "promoted": promoted, "old_sources_hold": holds, "tweetsumm_gain": gain,
            "tweetsumm_gain_without_replay": base_gain, "keeps_gain": keeps_gain, "poisoned_refused": refused,
            "without_replay_drops": visibly, "line": line}


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def print_rounds(rounds: dict[str, list[dict]], scored: dict[str, dict]) -> None:
    """Per arm and round: the gate's scores (candidate vs champion, per task and source, primary metric), the
    verdict, and the candidate against R0 (ROUGE-1 / accuracy, paired interval)."""
    from rich.console import Console
    from rich.table import Table

    con = Console(width=220)
    for arm, rs in rounds.items():
        table = Table(title=f"{arm}: per round, task and source")
        for col in ("round", "slice", "n", "candidate", "champion", "candidate - R0 [95% CI]", "verdict"):
            table.add_column(col, justify="left" if col in ("round", "slice", "verdict") else "right")
        for r in rs[1:] if arm != "replay" else rs:
            m = r["summary"]["evaluation"]
            first = True
            for task, t in m["tasks"].items():
                slices = [(task, t["n"], t["scores"])] + [
                    (f"{task}/{src}", s["n"], {role: {t["primary"]: v} if v is not None else None
                                               for role, v in s["scores"].items()})
                    for src, s in (t.get("sources") or {}).items()]
                mine = scored.get(arm, {}).get(r["round"]) or {}
                for label, n, sc in slices:
                    keys = [label] if "/" in label else [k for k in mine if k.startswith(task + "/")]
                    vs = mine.get(keys[0]) if len(keys) == 1 else None  # a task with one source: that source
                    table.add_row(
                        r["round"] if first else "", label, str(n), num(sc.get("candidate"), t["primary"]),
                        num(sc.get("champion"), t["primary"]),
                        f"{vs['metric']} {vs['delta']['mean']:+.2f} [{vs['delta']['low']:+.1f}, {vs['delta']['high']:+.1f}]"
                        if vs else "",
                        ("promoted" if r["promoted"] else "kept: " + m["gate"]["reason"][6:90]) if first else "")
                    first = False
        con.print(table)


def num(scores: dict | None, metric: str) -> str:
    return "" if not scores or scores.get(metric) is None else f"{scores[metric]:.2f}"
