"""The evaluation report a person reads: one self-contained HTML file, and the same summary for the CLI.

The HTML has no external references (charts are inline base64 PNGs, CSS is inline), so it opens the
same from a KFP HTML artifact, an MLflow artifact or a downloaded file. Jinja2 autoescaping is on:
inputs and generations are user text and model output, and must never become markup.
"""
from __future__ import annotations

import base64
import math

from jinja2 import Environment, StrictUndefined

from components.evaluate.charts import bar_chart_png, loss_curve_png

ROLES = ("candidate", "base", "champion")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em auto;max-width:1400px;
 padding:0 1em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}h3{font-size:1em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .6em;
 vertical-align:top;text-align:left}th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:
 tabular-nums;white-space:nowrap}tr.primary td{font-weight:600}
.better{color:#1b7f2a;font-weight:600}.worse{color:#c62828;font-weight:600}.muted{color:#777}
.verdict{display:inline-block;padding:.2em .7em;border-radius:4px;color:#fff;font-weight:700}
.promote{background:#2e7d32}.keep{background:#8d6e63}.pass{color:#2e7d32}.fail{color:#c62828}
.scroll{max-height:14em;overflow:auto;white-space:pre-wrap;word-break:break-word;margin:0;
 font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
table.worst{table-layout:fixed;width:100%}table.worst th:first-child{width:5em}
ol.refs{margin:0;padding-left:1.4em}.score{font-size:12px;color:#555;margin-top:.3em}
img{max-width:100%;height:auto}
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title><style>{{ css }}</style></head>
<body>
<h1>{{ title }}</h1>
<section id="header"><table>
<tr><th>model</th><td>{{ h.model_uri }}</td></tr>
<tr><th>base model</th><td>{{ h.base_model_uri }}</td></tr>
<tr><th>champion evaluated against</th><td>{{ h.champion }}</td></tr>
<tr><th>evaluation set</th><td><span title="{{ h.sha_full }}">sha256 {{ h.sha_short }}</span>,
 {{ h.n_examples }} examples{% if h.eval_set_uri %} ({{ h.eval_set_uri }}){% endif %}</td></tr>
<tr><th>dataset version</th><td>{{ h.dataset_version }}</td></tr>
<tr><th>generation</th><td>{% for k, v in h.generation %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}
{% else %}<span class="muted">not recorded</span>{% endfor %}</td></tr>
<tr><th>generation time</th><td>{% for k, v in h.seconds %}{{ k }} {{ v }} s{% if not loop.last %}, {% endif %}
{% else %}<span class="muted">not recorded</span>{% endfor %}</td></tr>
<tr><th>intervals</th><td>{{ h.confidence }} bootstrap, {{ h.resamples }} resamples</td></tr>
</table></section>

<section id="gate"><h2>Gate: <span class="verdict {{ gate.verdict }}">{{ gate.verdict }}</span></h2>
<p>Baseline: {{ gate.baseline }}. {{ gate.reason }}</p>
<table><tr><th></th><th>check</th><th>detail</th></tr>
{% for c in gate.checks %}<tr class="check"><td class="{{ 'pass' if c.passed else 'fail' }}">
{%- if c.passed %}&#10003; pass{% else %}&#10007; fail{% endif %}</td><td>{{ c.name }}</td><td>{{ c.detail }}</td></tr>
{% endfor %}</table></section>

<section id="metrics"><h2>Metrics per task</h2>
{% for t in tasks %}<h3 id="metrics-{{ t.name }}">{{ t.name }}{% if t.is_primary %} (primary task){% endif %}
 <span class="muted">{{ t.family }}, {{ t.n }} examples</span></h3>
<table class="metrics" data-task="{{ t.name }}"><tr><th>metric</th>
{% for r in t.roles %}<th>{{ r }}</th>{% endfor %}</tr>
{% for m in t.rows %}<tr class="{{ 'primary' if m.primary else 'other' }}"><td>{{ m.metric }}
{%- if m.lower_is_better %} <span class="muted">(lower is better)</span>{% endif %}</td>
{% for r in t.roles %}<td class="num">{{ m.cells[r] }}</td>{% endfor %}</tr>
{% endfor %}</table>
<table class="deltas"><tr><th>{{ t.primary }} delta</th><th>mean [CI]</th></tr>
{% for d in t.deltas %}<tr><td>candidate &minus; {{ d.vs }}</td><td class="num {{ d.cls }}">{{ d.text }}</td></tr>
{% endfor %}</table>
{% if t.sources %}<table class="sources" data-task="{{ t.name }}"><tr><th>source</th><th>n</th>
{% for r in t.roles %}<th>{{ r }} {{ t.primary }}</th>{% endfor %}{% for d in t.deltas %}<th>&minus; {{ d.vs }}</th>{% endfor %}</tr>
{% for src in t.sources %}<tr data-source="{{ src.name }}"><td>{{ src.name }}</td><td class="num">{{ src.n }}</td>
{% for r in t.roles %}<td class="num">{{ src.cells[r] }}</td>{% endfor %}
{% for d in src.deltas %}<td class="num {{ d.cls }}">{{ d.text }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{% endfor %}</section>

<section id="charts"><h2>Primary metric per task</h2>
<img alt="primary metric per task" src="data:image/png;base64,{{ bar_png }}">
<h2>Training loss</h2>
{% if loss_png %}<img alt="training loss" src="data:image/png;base64,{{ loss_png }}">
{% else %}<p class="muted note">No training history was recorded for this model, so there is no loss curve.</p>
{% endif %}</section>

<section id="worst"><h2>Worst examples (lowest candidate score)</h2>
{% for w in worst %}<h3>{{ w.task }}</h3>
{% if not w.rows %}<p class="muted">No predictions for this task.</p>{% else %}
<table class="worst" data-task="{{ w.task }}"><tr><th>id</th><th>dialogue / inputs</th><th>references</th>
{% for r in w.roles %}<th>{{ r }}</th>{% endfor %}</tr>
{% for row in w.rows %}<tr class="example" data-id="{{ row.id }}"><td>{{ row.id }}</td>
<td><pre class="scroll">{{ row.inputs }}</pre></td>
<td><ol class="refs">{% for ref in row.references %}<li><pre class="scroll">{{ ref }}</pre></li>{% endfor %}</ol></td>
{% for o in row.outputs %}<td class="{{ o.role }}"><pre class="scroll">{{ o.text }}</pre>
<div class="score">score {{ o.score }}</div></td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{% endfor %}</section>
</body></html>
"""

_env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_template = _env.from_string(_TEMPLATE)


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _num(x: object) -> str:
    return f"{x:.2f}" if _finite(x) else "—"


def _ci(ci: list | tuple | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci and all(_finite(c) for c in ci) else ""


def _delta_text(d: dict | None) -> str:
    if not d or not _finite(d.get("mean")):
        return "—"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def delta_class(d: dict | None, lower_is_better: bool = False) -> str:
    """'better' / 'worse' when the whole interval lies on one side of 0, else '' (not supported)."""
    if not d or not (_finite(d.get("low")) and _finite(d.get("high"))):
        return ""
    low, high = (-d["high"], -d["low"]) if lower_is_better else (d["low"], d["high"])
    return "better" if low > 0 else "worse" if high < 0 else ""


def _has_champion(task: dict) -> bool:
    return task["scores"].get("champion") is not None


def _task_view(name: str, t: dict, metrics: dict) -> dict:
    roles = [r for r in ROLES if r != "champion" or _has_champion(t)]
    lower = set(t.get("lower_is_better") or [])
    names = list(dict.fromkeys(k for r in roles for k in (t["scores"].get(r) or {})))
    rows = []
    for m in names:
        cells = {}
        for r in roles:
            cell = _num(t["scores"][r].get(m))
            if m == t["primary"] and _ci((t.get("ci") or {}).get(r)):
                cell += " " + _ci(t["ci"][r])
            cells[r] = cell
        rows.append({"metric": m, "primary": m == t["primary"], "lower_is_better": m in lower,
                     "cells": cells})
    champ = metrics.get("champion_version")
    deltas = [{"vs": f"champion v{champ}" if champ is not None else "champion",
               "text": _delta_text(t["delta"].get("champion")),
               "cls": delta_class(t["delta"].get("champion"), t["primary"] in lower)}] if _has_champion(t) else []
    deltas.append({"vs": "base", "text": _delta_text(t["delta"].get("base")),
                   "cls": delta_class(t["delta"].get("base"), t["primary"] in lower)})
    lower_primary = t["primary"] in lower
    sources = [{"name": src, "n": s["n"], "cells": {r: _num(s["scores"].get(r)) for r in roles},
                "deltas": [{"text": _delta_text(s["delta"].get(other)),
                            "cls": delta_class(s["delta"].get(other), lower_primary)}
                           for other in (["champion"] if _has_champion(t) else []) + ["base"]]}
               for src, s in (t.get("sources") or {}).items()]
    return {"name": name, "family": t.get("family", ""), "primary": t["primary"], "n": t.get("n", ""),
            "is_primary": name == metrics.get("primary_task"), "roles": roles, "rows": rows, "deltas": deltas,
            "sources": sources}


def _references(row: dict) -> list[str]:
    refs = row.get("references")
    if refs is None:
        refs = row.get("reference")
    if refs is None:
        return []
    return [refs] if isinstance(refs, str) else [str(r) for r in refs]


def worst_rows(predictions: list[dict], task: str, n: int) -> list[dict]:
    """The n rows of `task` with the lowest candidate_score, ties broken by id; unscored rows first."""
    rows = [r for r in predictions if r.get("task") == task]
    rows.sort(key=lambda r: (r["candidate_score"] if _finite(r.get("candidate_score")) else -math.inf,
                             str(r.get("id"))))
    return rows[:max(n, 0)]


def _worst_view(task: str, rows: list[dict], with_champion: bool) -> dict:
    roles = ["base", "candidate"] + (["champion"] if with_champion else [])
    view = [{"id": r.get("id"), "inputs": r.get("inputs") or "", "references": _references(r),
             "outputs": [{"role": role, "text": r.get(role) or "",
                          "score": _num(r.get(f"{role}_score")).replace("—", "n/a")} for role in roles]}
            for r in rows]
    return {"task": task, "roles": roles, "rows": view}


def _header(metrics: dict) -> dict:
    sha = metrics.get("eval_set_sha256") or ""
    champ = metrics.get("champion_version")
    return {
        "model_uri": metrics.get("model_uri", ""), "base_model_uri": metrics.get("base_model_uri", ""),
        "champion": "none" if champ is None else f"version {champ} ({metrics.get('champion_uri') or ''})",
        "sha_full": sha, "sha_short": sha[:12] or "unknown", "n_examples": metrics.get("n_examples", ""),
        "eval_set_uri": metrics.get("eval_set_uri") or "", "dataset_version": metrics.get("dataset_version", ""),
        "generation": sorted((metrics.get("generation") or {}).items()),
        "seconds": [(k, f"{v:.1f}") for k, v in (metrics.get("generate_seconds") or {}).items() if _finite(v)],
        "confidence": f"{100 * metrics.get('confidence', 0.95):g}%", "resamples": metrics.get("resamples", ""),
    }


def render_report(metrics: dict, predictions: list[dict], history: list[dict] | None,
                  worst: int = 5, title: str | None = None) -> str:
    """The whole report as one HTML string (metrics.json schema 2, predictions.parquet rows)."""
    tasks = metrics.get("tasks", {})
    names = list(dict.fromkeys(list(tasks) + [r["task"] for r in predictions if r.get("task")]))
    worst_views = []
    for name in names:
        rows = worst_rows(predictions, name, worst)
        champ = (name in tasks and _has_champion(tasks[name])) or any(r.get("champion") is not None for r in rows)
        worst_views.append(_worst_view(name, rows, champ))
    gate = metrics.get("gate") or {}
    loss = loss_curve_png(history)
    return _template.render(
        title=title or f"mixtune evaluation: {metrics.get('model_uri', '')}", css=_CSS,
        h=_header(metrics),
        gate={"verdict": "promote" if gate.get("promote") else "keep", "baseline": gate.get("baseline", ""),
              "reason": gate.get("reason", ""), "checks": gate.get("checks", [])},
        tasks=[_task_view(n, t, metrics) for n, t in tasks.items()],
        bar_png=base64.b64encode(bar_chart_png(metrics)).decode("ascii"),
        loss_png=base64.b64encode(loss).decode("ascii") if loss else None,
        worst=worst_views,
    )


SUMMARY_COLUMNS = ("task", "metric", "base", "champion", "candidate [CI]", "Δ champion [CI]", "Δ base")


def summary_slices(metrics: dict) -> list[tuple[str, dict, dict]]:
    """(label, task, its scores and deltas) per task, then per source of a task fed by several."""
    out = []
    for name, t in metrics.get("tasks", {}).items():
        p = t["primary"]
        out.append((name, t, {"scores": {r: (v or {}).get(p) for r, v in t["scores"].items()},
                              "ci": (t.get("ci") or {}).get("candidate"), "delta": t["delta"]}))
        out += [(f"  {name}/{src}", t, {"scores": s["scores"], "ci": None, "delta": s["delta"]})
                for src, s in (t.get("sources") or {}).items()]
    return out


def summary_rows(metrics: dict) -> list[tuple[str, ...]]:
    """One row of display strings per task (and source), for its primary metric, in SUMMARY_COLUMNS order."""
    rows = []
    for label, t, v in summary_slices(metrics):
        ci = _ci(v["ci"])
        base_delta = v["delta"].get("base")
        rows.append((label, t["primary"], _num(v["scores"].get("base")), _num(v["scores"].get("champion")),
                     _num(v["scores"].get("candidate")) + (" " + ci if ci else ""),
                     _delta_text(v["delta"].get("champion")),
                     f"{base_delta['mean']:+.2f}" if base_delta and _finite(base_delta.get("mean")) else "—"))
    return rows


def print_summary_table(metrics: dict, console=None) -> None:
    """The per-task summary as a rich table, deltas coloured like the HTML report, then the gate."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    con = console or Console()
    sha = (metrics.get("eval_set_sha256") or "")[:12]
    champ = metrics.get("champion_version")
    table = Table(title=f"Evaluation on {metrics.get('n_examples')} examples (eval set {sha}), "
                        f"champion {'v' + str(champ) if champ is not None else 'none'}")
    for col in SUMMARY_COLUMNS:
        text_col = col in ("task", "metric")
        table.add_column(col, justify="left" if text_col else "right", no_wrap=text_col)
    styles = {"better": "green", "worse": "red", "": ""}
    for (_, t, v), row in zip(summary_slices(metrics), summary_rows(metrics)):
        lower = t["primary"] in (t.get("lower_is_better") or [])
        cells = [Text(c) for c in row]
        cells[5].stylize(styles[delta_class(v["delta"].get("champion"), lower)])
        cells[6].stylize(styles[delta_class(v["delta"].get("base"), lower)])
        table.add_row(*cells)
    con.print(table)
    gate = metrics.get("gate") or {}
    verdict = "promote" if gate.get("promote") else "keep"
    con.print(Text(f"gate: {verdict}", style="bold green" if gate.get("promote") else "bold yellow")
              + Text(f" (vs {gate.get('baseline', '?')}): {gate.get('reason', '')}"))
    for c in gate.get("checks", []):
        con.print(Text("  ✓ " if c.get("passed") else "  ✗ ", style="green" if c.get("passed") else "red")
                  + Text(f"{c.get('name', '')}: {c.get('detail', '')}"))
