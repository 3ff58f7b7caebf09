"""The promotion gate: a pure function of evaluate's metrics.json (schema 2) and the gate config.

Two questions, both answered from numbers measured in one evaluate run on one frozen set:
  1. Is the candidate better on the primary task? The paired-bootstrap interval of
     (candidate - baseline) must lie above `min_improvement`; the baseline is the champion, or the
     base model before the first promotion.
  2. Did anything get worse? No scored task's primary metric may drop by more than its tolerance
     against the champion, nor (with `check_base`) against the base model: that is forgetting. With
     `check_sources`, each source of a task fed by several (old chat logs, new ones) is held alike.
Evaluate runs it to show the verdict in its report; register runs it again against the champion
alias as it is at registration time; `mixtune promote` runs it for an older version.
"""
from __future__ import annotations

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
    """How much better the candidate is (positive = better), whichever way the metric points."""
    sign = -1.0 if task["primary"] in task.get("lower_is_better", []) else 1.0
    if key == "mean":
        return sign * delta["mean"]
    # The lower bound of the gain is the low end for higher-is-better, the negated high end otherwise.
    return sign * delta["low"] if sign > 0 else sign * delta["high"]


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
    low, mean = _gain(p, delta, "low"), _gain(p, delta, "mean")
    who = f"champion v{metrics['champion_version']}" if baseline == "champion" else "base model"
    conf = f"{100 * metrics.get('confidence', 0.95):g}%"
    checks.append(Check(
        f"improves {primary}", low > gate.min_improvement,
        f"{p['primary']} {mean:+.2f} vs {who}, {conf} CI lower bound {low:+.2f} "
        f"{'>' if low > gate.min_improvement else '<='} margin {gate.min_improvement:g}"))

    against = [("champion", f"champion v{metrics.get('champion_version')}")] if baseline == "champion" else []
    if gate.check_base:
        against.append(("base", "base model"))
    for name, task in sorted(tasks.items()):
        tolerance = gate.max_drop_per_task.get(name, gate.max_drop)
        # The task, then each of its sources: new chat logs can lift a task while its old ones drop.
        slices = [(name, task["delta"])]
        for src, s in (task.get("sources", {}) if gate.check_sources else {}).items():
            if s["n"] >= gate.source_min_examples:
                slices.append((f"{name}/{src}", s["delta"]))
            else:
                checks.append(Check(f"{name}/{src} not gated", True, f"{s['n']} examples < source_min_examples "
                                    f"{gate.source_min_examples}: reported, not held to the tolerance"))
        for label_of_slice, deltas in slices:
            for role, label in against:
                d = deltas.get(role)
                if d is None:
                    continue
                gain = _gain(task, d, "mean")
                checks.append(Check(f"{label_of_slice} holds vs {role}", gain >= -tolerance,
                                    f"{task['primary']} {gain:+.2f} vs {label} (tolerance -{tolerance:g})"))

    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "keep: " + "; ".join(f"{c.name} failed ({c.detail})" for c in failed)
    else:
        reason = f"promote: {checks[0].detail}; no task (or source) dropped beyond its tolerance"
    return Decision(not failed, reason, tuple(checks), baseline)


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
