"""The evaluation report a person reads: one self-contained HTML file, and the same summary for the CLI.

The HTML has no external references (charts are inline base64 PNGs, CSS is inline), so it opens the
same from a KFP HTML artifact, an MLflow artifact or a downloaded file. Jinja2 autoescaping is on:
inputs and generations are user text and model output, and must never become markup.
"""
from __future__ import annotations

import base64
import hashlib
import math
import re

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup, escape

from components.evaluate.charts import bar_chart_png, loss_curve_png
from components.evaluate.formatting import ci as _ci, delta_class, delta_text as _delta_text, finite as _finite, num as _num

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
table.examples{table-layout:fixed;width:100%}table.examples th:first-child{width:5em}
ol.refs{margin:0;padding-left:1.4em}.score{font-size:12px;color:#555;margin-top:.3em}
img{max-width:100%;height:auto}mark.unsupported{background:#ffcdd2;color:#b71c1c;padding:0 .1em}h4{margin:.8em 0 .2em}
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
{% if t.faithful %}<table class="faithfulness" data-task="{{ t.name }}"><tr><th>faithfulness</th>
{% for r in t.roles %}<th>{{ r }}</th>{% endfor %}{% for d in t.deltas %}<th>candidate &minus; {{ d.vs }}</th>{% endfor %}</tr>
{% for m in t.faithful %}<tr data-metric="{{ m.metric }}"><td>{{ m.label }}</td>
{% for r in t.roles %}<td class="num">{{ m.cells[r] }}</td>{% endfor %}
{% for d in m.deltas %}<td class="num {{ d.cls }}">{{ d.text }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
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

<section id="examples"><h2>Examples: worst, best and random (by candidate score)</h2>
<p class="muted">Facts the dialogue does not support are <mark class="unsupported">marked</mark>.</p>
{% for w in worst %}<h3>{{ w.task }}</h3>
{% if not w.groups %}<p class="muted">No predictions for this task.</p>{% endif %}
{% for g in w.groups %}<h4>{{ g.kind }}</h4>
<table class="examples {{ g.kind }}" data-task="{{ w.task }}" data-kind="{{ g.kind }}"><tr><th>id</th><th>dialogue / inputs</th><th>references</th>
{% for r in w.roles %}<th>{{ r }}</th>{% endfor %}</tr>
{% for row in g.rows %}<tr class="example" data-id="{{ row.id }}"><td>{{ row.id }}</td>
<td><pre class="scroll">{{ row.inputs }}</pre></td>
<td><ol class="refs">{% for ref in row.references %}<li><pre class="scroll">{{ ref }}</pre></li>{% endfor %}</ol></td>
{% for o in row.outputs %}<td class="{{ o.role }}"><pre class="scroll">{{ o.text }}</pre>
<div class="score">score {{ o.score }}{% if o.degenerate %} &middot; <span class="fail">degenerate: {{ o.degenerate }}</span>{% endif %}
{% if o.unsupported %} &middot; <span class="fail">{{ o.unsupported }} unsupported</span>{% endif %}</div></td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
{% endfor %}</section>
</body></html>
"""

_env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_template = _env.from_string(_TEMPLATE)


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
            "sources": sources, "faithful": _faithful_view(t.get("faithfulness"), roles)}


FAITHFUL_LABELS = {"unsupported": "unsupported facts % (lower is better)", "degenerate":
                   "degenerate outputs % (lower is better)", "name_coverage": "names covered %"}


def _faithful_view(f: dict | None, roles: list[str]) -> list[dict]:
    """The faithfulness table beside the metric table: each rate per model with its interval, and the
    candidate's paired deltas (coloured by whether the interval says better or worse)."""
    if not f:
        return []
    lower = set(f.get("lower_is_better") or [])
    out = []
    for metric, label in FAITHFUL_LABELS.items():
        cells = {r: (_num((f["scores"].get(r) or {}).get(metric)) + " " + _ci((f["ci"].get(r) or {}).get(metric))).strip()
                 for r in roles}
        deltas = [{"text": _delta_text(f["delta"][metric].get(other)),
                   "cls": delta_class(f["delta"][metric].get(other), metric in lower)}
                  for other in (["champion"] if "champion" in roles else []) + ["base"]]
        out.append({"metric": metric, "label": label, "cells": cells, "deltas": deltas})
    return out


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


def example_groups(predictions: list[dict], task: str, n: int) -> list[tuple[str, list[dict]]]:
    """[("worst", ...), ("best", ...), ("random", ...)]: n rows each, no row twice. The random ones are
    the first by a hash of their id, so the same evaluation shows the same rows."""
    worst = worst_rows(predictions, task, n)
    rest = [r for r in predictions if r.get("task") == task and r not in worst]
    best = sorted(rest, key=lambda r: (-(r["candidate_score"] if _finite(r.get("candidate_score")) else -math.inf),
                                       str(r.get("id"))))[:max(n, 0)]
    rest = [r for r in rest if r not in best]
    random = sorted(rest, key=lambda r: hashlib.sha256(str(r.get("id")).encode()).hexdigest())[:max(n, 0)]
    return [(kind, rows) for kind, rows in (("worst", worst), ("best", best), ("random", random)) if rows]


def highlight(text: str, facts: list[str] | None) -> Markup:
    """text escaped, with each unsupported fact (as written) wrapped in <mark class="unsupported">."""
    facts = sorted({f for f in facts or [] if f}, key=len, reverse=True)
    if not facts:
        return escape(text)
    pattern = re.compile("|".join(re.escape(f) for f in facts))
    out, last = Markup(""), 0
    for m in pattern.finditer(text):
        out += escape(text[last:m.start()]) + Markup('<mark class="unsupported">') + escape(m.group(0)) + Markup("</mark>")
        last = m.end()
    return out + escape(text[last:])


def _example_view(r: dict, roles: list[str]) -> dict:
    return {"id": r.get("id"), "inputs": r.get("inputs") or "", "references": _references(r),
            "outputs": [{"role": role, "text": highlight(r.get(role) or "", r.get(f"{role}_unsupported")),
                         "score": _num(r.get(f"{role}_score")).replace("—", "n/a"),
                         "degenerate": r.get(f"{role}_degenerate"),
                         "unsupported": len(r.get(f"{role}_unsupported") or [])} for role in roles]}


def _worst_view(task: str, predictions: list[dict], n: int, with_champion: bool) -> dict:
    roles = ["base", "candidate"] + (["champion"] if with_champion else [])
    return {"task": task, "roles": roles,
            "groups": [{"kind": kind, "rows": [_example_view(r, roles) for r in rows]}
                       for kind, rows in example_groups(predictions, task, n)]}


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
        rows = [r for r in predictions if r.get("task") == name]
        champ = (name in tasks and _has_champion(tasks[name])) or any(r.get("champion") is not None for r in rows)
        worst_views.append(_worst_view(name, predictions, worst, champ))
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
