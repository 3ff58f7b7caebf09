"""The promotion gate: a pure function of evaluate's metrics.json (schema 2) and the gate config.

Two questions, both answered from numbers measured in one evaluate run on one frozen set:
  1. Is the candidate better on the primary task? The paired-bootstrap interval of
     (candidate - baseline) must lie above `min_improvement`; the baseline is the champion, or the
     base model before the first promotion. With `improve_on: new_data`, on the examples of this run's own
     test split (a retrain on a new batch must improve there; the champion's old set must hold, question 3).
  2. Are its summaries faithful? Its unsupported-fact and degenerate rates stay under absolute ceilings and
     do not rise against the champion beyond a tolerance, whatever its ROUGE. Before the first champion, an
     unusable base model (mostly degenerate outputs) is no baseline: the candidate must reach an absolute
     floor of the primary metric instead of merely beating it.
  3. Did anything get worse? No scored task's primary metric may drop by more than its tolerance
     against the champion, nor (with `check_base`) against the base model: that is forgetting. With
     `check_sources`, each source of a task fed by several (old chat logs, new ones) is held alike.
     A drop fails when it is beyond the tolerance *and* real: the paired interval lies below zero. One
     example of 96 that flips is noise, not forgetting. That is sound only if the set can see a drop of the
     tolerance at all, so each slice must also resolve it: the interval's half-width at most the tolerance.
     Then a point drop beyond the tolerance is always significant (the tolerance decides, not the noise),
     an equal model is refused at most 2.5 % of the time per slice, and a drop of twice the tolerance is
     caught at least 97.5 % of the time. A slice that cannot resolve it fails and says how many examples
     would (the half-width shrinks as 1/sqrt(n)).
Evaluate runs it to show the verdict in its report; register runs it again against the champion
alias as it is at registration time; `mixtune promote` runs it for an older version.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from components.common.config import GateConfig


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    checks: tuple[Check, ...] = field(default_factory=tuple)
    baseline: str | None = None  # "champion" | "base"

    def as_dict(self) -> dict:
        return {"promote": self.promote, "reason": self.reason, "baseline": self.baseline,
                "checks": [asdict(c) for c in self.checks]}


def _gain(task: dict, delta: dict, key: str) -> float:
    """How much better the candidate is (positive = better), whichever way the metric points: the mean, or
    the interval's lower ("low") or upper ("high") bound of the gain."""
    sign = -1.0 if task["primary"] in task.get("lower_is_better", []) else 1.0
    if key == "mean":
        return sign * delta["mean"]
    # For a lower-is-better metric the gain's low end is the delta's negated high end, and vice versa.
    if key == "low":
        return delta["low"] if sign > 0 else -delta["high"]
    return delta["high"] if sign > 0 else -delta["low"]


def evaluate_gate(gate: GateConfig, metrics: dict) -> Decision:
    """The verdict on the scores as evaluated (against the champion evaluate saw, if any)."""
    tasks, primary = metrics["tasks"], metrics["primary_task"]
    if primary not in tasks:
        raise ValueError(f"metrics.json has no scores for the primary task {primary!r}")
    baseline = "champion" if metrics.get("champion_version") is not None else "base"
    checks: list[Check] = []

    p = tasks[primary]
    delta = p["delta"].get(baseline)
    if delta is None:
        raise ValueError(f"metrics.json has no {baseline} delta for {primary!r}")
    unusable = unusable_base(gate, tasks)
    who = f"champion v{metrics['champion_version']}" if baseline == "champion" else "base model"
    if baseline == "base" and primary in unusable:
        # "Better than an untrained model" says nothing: the candidate must reach an absolute floor instead.
        score = p["scores"]["candidate"][p["primary"]]
        checks.append(Check("base model usable", True, f"no: {unusable[primary]:.1f}% of its {primary} outputs "
                            f"are degenerate (> {gate.base_max_degenerate:g}%), so the absolute floor and ceilings "
                            "decide, not the comparison with it"))
        checks.append(Check(f"reaches {primary} floor", score >= gate.min_primary,
                            f"{p['primary']} {score:.2f} {'>=' if score >= gate.min_primary else '<'} min_primary "
                            f"{gate.min_primary:g}"))
    else:
        delta, where, note = improvement_slice(gate, p, baseline, delta)
        low, mean = _gain(p, delta, "low"), _gain(p, delta, "mean")
        conf = f"{100 * metrics.get('confidence', 0.95):g}%"
        checks.append(Check(
            f"improves {primary}{where}", low > gate.min_improvement,
            f"{p['primary']} {mean:+.2f} vs {who}, {conf} CI lower bound {low:+.2f} "
            f"{'>' if low > gate.min_improvement else '<='} margin {gate.min_improvement:g}{note}"))
    checks += faithfulness_checks(gate, metrics, baseline)

    against = [("champion", f"champion v{metrics.get('champion_version')}")] if baseline == "champion" else []
    if gate.check_base:
        against.append(("base", "base model"))
    for name, task in sorted(tasks.items()):
        tolerance = gate.max_drop_per_task.get(name, gate.max_drop)
        # The task, then each of its sources: new chat logs can lift a task while its old ones drop.
        slices = [(name, task["delta"], task["n"])]
        for src, s in (task.get("sources", {}) if gate.check_sources else {}).items():
            if s["n"] >= gate.source_min_examples:
                slices.append((f"{name}/{src}", s["delta"], s["n"]))
            else:
                checks.append(Check(f"{name}/{src} not gated", True, f"{s['n']} examples < source_min_examples "
                                    f"{gate.source_min_examples}: reported, not held to the tolerance"))
        for label_of_slice, deltas, n in slices:
            for role, label in against:
                d = deltas.get(role)
                if d is None or (role == "base" and name in unusable):
                    continue
                checks += drop_checks(gate, task, d, n, tolerance, label_of_slice, role, label)

    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "keep: " + "; ".join(f"{c.name} failed ({c.detail})" for c in failed)
    else:
        head = next(c for c in checks if c.name.startswith(("improves", "reaches")))
        reason = (f"promote: {head.detail}; facts and outputs within their ceilings; no task (or source) dropped "
                  "beyond its tolerance")
    return Decision(not failed, reason, tuple(checks), baseline)


def improvement_slice(gate: GateConfig, task: dict, baseline: str, delta: dict) -> tuple[dict, str, str]:
    """(the delta the improvement is judged on, where, a note). improve_on: new_data judges it on this run's
    own examples (evaluate's "new_data" slice), when they are scored beside others and are enough."""
    if gate.improve_on != "new_data":
        return delta, "", ""
    new = task.get("new_data")
    if new is None:  # nothing is scored beside this run's own examples: the task is its new data
        return delta, "", ""
    if new["n"] < gate.source_min_examples or new["delta"].get(baseline) is None:
        return delta, "", (f" (improve_on new_data: its {new['n']} examples from {', '.join(new['sources'])} are "
                           f"under source_min_examples {gate.source_min_examples}, so the whole task)")
    return new["delta"][baseline], f" on new data ({', '.join(new['sources'])})", f", on {new['n']} examples"


def drop_checks(gate: GateConfig, task: dict, d: dict, n: int, tolerance: float, where: str, role: str,
                label: str) -> list[Check]:
    """One slice against one baseline: it holds unless the drop is beyond the tolerance and the interval is
    below zero; and (require_resolution) the interval is narrow enough to see a drop of the tolerance."""
    gain, low, high = _gain(task, d, "mean"), _gain(task, d, "low"), _gain(task, d, "high")
    metric = task["primary"]
    real = gain < -tolerance and high < 0
    verdict = ("a real drop beyond the tolerance" if real else "a drop within noise" if gain < -tolerance
               else "within the tolerance")
    checks = [Check(f"{where} holds vs {role}", not real,
                    f"{metric} {gain:+.2f} [{low:+.2f}, {high:+.2f}] vs {label}, tolerance -{tolerance:g}: {verdict}")]
    half = (high - low) / 2
    # Resolution matters only where the interval reaches below -tolerance: otherwise the set already shows any
    # drop is within it. A tolerance of 0 ("no drop at all") no finite set resolves.
    if tolerance > 0 and low < -tolerance and half > tolerance:
        need = needed_examples(n, half, tolerance)
        detail = (f"{metric} interval ±{half:.2f} on {n} examples is wider than the tolerance {tolerance:g}: this set "
                  f"cannot tell a drop of {tolerance:g} from noise; about {need} examples would "
                  "(evaluate.max_examples, evaluate.per_source)")
        checks.append(Check(f"{where} resolves the tolerance vs {role}", not gate.require_resolution,
                            detail if gate.require_resolution else detail + " (require_resolution off)"))
    return checks


def needed_examples(n: int, half_width: float, tolerance: float) -> int:
    """Examples for a half-width of `tolerance`, from one of `half_width` on n (it shrinks as 1/sqrt(n))."""
    return max(n + 1, math.ceil(n * (half_width / tolerance) ** 2))


def unusable_base(gate: GateConfig, tasks: dict) -> dict[str, float]:
    """task -> the base model's degenerate rate, for the tasks on which it is above base_max_degenerate."""
    out = {}
    for name, task in tasks.items():
        base = ((task.get("faithfulness") or {}).get("scores") or {}).get("base")
        if base is not None and base["degenerate"] > gate.base_max_degenerate:
            out[name] = base["degenerate"]
    return out


CEILINGS = (("unsupported", "max_unsupported", "unsupported facts"), ("degenerate", "max_degenerate", "degenerate outputs"))


def faithfulness_checks(gate: GateConfig, metrics: dict, baseline: str) -> list[Check]:
    """Whatever the ROUGE: the candidate's unsupported-fact and degenerate rates stay under their ceilings,
    and do not rise against the champion beyond the tolerance where the paired interval says the rise is
    real (its lower bound above 0). On the primary task, and on each gated source of it."""
    primary = metrics["primary_task"]
    faithful = metrics["tasks"][primary].get("faithfulness")
    # The tasks evaluate checks (recorded since it checks any; before that, summarization was the one to check).
    if primary not in (metrics.get("faithfulness") or {}).get("tasks", ["summarization"]):
        return []
    if faithful is None:
        return [Check(f"{primary} faithfulness measured", False, "metrics.json has no unsupported-fact or "
                      "degenerate rates (evaluated before they existed, or the task is not in "
                      "evaluate.faithfulness.tasks): re-evaluate to promote")]
    slices = [(primary, faithful)]
    for src, s in (metrics["tasks"][primary].get("sources") or {}).items():
        if gate.check_sources and s.get("faithfulness") and s["n"] >= gate.source_min_examples:
            slices.append((f"{primary}/{src}", s["faithfulness"]))
    checks = []
    for label, f in slices:
        for metric, knob, words in CEILINGS:
            ceiling, rate = getattr(gate, knob), f["scores"]["candidate"][metric]
            low, high = f["ci"]["candidate"][metric]
            checks.append(Check(f"{label} {words} <= {ceiling:g}%", rate <= ceiling,
                                f"{rate:.1f}% [{low:.1f}, {high:.1f}] {'<=' if rate <= ceiling else '>'} {knob} {ceiling:g}"))
            d = f["delta"][metric].get("champion") if baseline == "champion" else None
            if d is not None:
                worse = d["mean"] > gate.faithfulness_tolerance and d["low"] > 0
                checks.append(Check(f"{label} {words} hold vs champion", not worse,
                                    f"{d['mean']:+.1f} points [{d['low']:+.1f}, {d['high']:+.1f}] vs champion v"
                                    f"{metrics['champion_version']} (tolerance +{gate.faithfulness_tolerance:g})"))
    return checks


def decide(gate: GateConfig, metrics: dict, current_champion: str | None) -> Decision:
    """The gate at registration: the scores must have been measured against today's champion."""
    evaluated = metrics.get("champion_version")
    evaluated = None if evaluated is None else str(evaluated)
    current = None if current_champion is None else str(current_champion)
    if current is not None and current != evaluated:
        was = f"v{evaluated}" if evaluated is not None else "no champion"
        return Decision(False, f"keep: champion changed since evaluation ({was} then, v{current} now): scores "
                               "are not on the same footing; re-evaluate to promote")
    verdict = evaluate_gate(gate, metrics)
    if current is None and evaluated is not None:
        # The alias was removed after evaluation; the comparison with the old champion is still the stricter one.
        return Decision(verdict.promote, f"{verdict.reason} (champion alias removed after evaluation against "
                                         f"v{evaluated})", verdict.checks, verdict.baseline)
    return verdict
