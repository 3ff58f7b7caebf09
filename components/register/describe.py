"""The model version's description: the gate's verdict, its checks and the primary scores, in Markdown.

MLflow's registry page shows the description above the tags, so a person reading a version sees why it
is (or is not) the champion without decoding tags. The numbers come from the same metrics.json the gate
read; the full per-metric scores stay in evaluate's metrics.json and report.html (EVAL_URI_TAG).
"""
from __future__ import annotations

from components.common.gate import Decision

MAX_DESCRIPTION = 4900  # MLflow keeps up to 5000 characters


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def version_description(decision: Decision, metrics: dict, pipeline_run: str) -> str:
    verdict = "**champion**: promoted" if decision.promote else "**kept as challenger**: not promoted"
    lines = [f"{verdict}. {_cell(decision.reason)}", "",
             f"Evaluated in pipeline run `{pipeline_run}` on {metrics.get('n_examples')} examples "
             f"(eval set `{str(metrics.get('eval_set_sha256') or '')[:12]}`), against "
             + (f"champion v{metrics['champion_version']}" if metrics.get("champion_version") else "the base model only")
             + ".", ""]
    if decision.checks:
        lines += ["| gate check | passed | detail |", "|---|---|---|"]
        lines += [f"| {_cell(c.name)} | {'yes' if c.passed else '**no**'} | {_cell(c.detail)} |" for c in decision.checks]
        lines.append("")
    lines += ["| task / source | metric | candidate | champion | base | candidate − champion |", "|---|---|---|---|---|---|"]
    for task, t in metrics.get("tasks", {}).items():
        key, s = t["primary"], t.get("scores", {})
        d = (t.get("delta") or {}).get("champion")
        # a task's scores are {metric: value} per model; a source slice's, the primary metric's value
        row = [_value((s.get(role) or {}).get(key)) for role in ("candidate", "champion", "base")]
        lines.append(f"| {task} | {key} | {' | '.join(row)} | {_delta(d)} |")
        for src, sl in (t.get("sources") or {}).items():
            ss = sl.get("scores", {})
            row = [_value(ss.get(role)) for role in ("candidate", "champion", "base")]
            lines.append(f"| {task} / {src} | {key} | {' | '.join(row)} | {_delta((sl.get('delta') or {}).get('champion'))} |")
    text = "\n".join(lines)
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 1] + "…"


def _delta(d: dict | None) -> str:
    return "—" if not d else f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
