"""The evaluation summary on the console: one rich table of every task's (and source's) primary metric and
faithfulness rates, deltas coloured like the HTML report, then the gate's verdict and checks."""
from __future__ import annotations

from components.evaluate.formatting import ci as _ci, delta_class, delta_text as _delta_text, finite as _finite, num as _num


SUMMARY_COLUMNS = ("task", "metric", "base", "champion", "candidate [CI]", "Δ champion [CI]", "Δ base")


def _faithful_slices(label: str, f: dict | None) -> list[tuple[str, str, bool, dict]]:
    if not f:
        return []
    lower = set(f.get("lower_is_better") or [])
    return [(label, metric, metric in lower, {"scores": {r: (v or {}).get(metric) for r, v in f["scores"].items()},
                                              "ci": (f["ci"].get("candidate") or {}).get(metric),
                                              "delta": f["delta"][metric]})
            for metric in ("unsupported", "degenerate", "name_coverage")]


def summary_slices(metrics: dict) -> list[tuple[str, str, bool, dict]]:
    """(label, metric, lower is better, its scores and deltas) per task: its primary metric, then its
    faithfulness rates; then the same per source of a task fed by several."""
    out = []
    for name, t in metrics.get("tasks", {}).items():
        p = t["primary"]
        lower = p in (t.get("lower_is_better") or [])
        out.append((name, p, lower, {"scores": {r: (v or {}).get(p) for r, v in t["scores"].items()},
                                     "ci": (t.get("ci") or {}).get("candidate"), "delta": t["delta"]}))
        out += _faithful_slices(name, t.get("faithfulness"))
        for src, s in (t.get("sources") or {}).items():
            out.append((f"  {name}/{src}", p, lower, {"scores": s["scores"], "ci": None, "delta": s["delta"]}))
            out += _faithful_slices(f"  {name}/{src}", s.get("faithfulness"))
    return out


def summary_rows(metrics: dict) -> list[tuple[str, ...]]:
    """One row of display strings per task (and source) and metric, in SUMMARY_COLUMNS order; a
    lower-is-better metric is marked with a down arrow."""
    rows = []
    for label, metric, lower, v in summary_slices(metrics):
        ci = _ci(v["ci"])
        base_delta = v["delta"].get("base")
        rows.append((label, metric + (" ↓" if lower else ""), _num(v["scores"].get("base")),
                     _num(v["scores"].get("champion")), _num(v["scores"].get("candidate")) + (" " + ci if ci else ""),
                     _delta_text(v["delta"].get("champion")),
                     f"{base_delta['mean']:+.2f}" if base_delta and _finite(base_delta.get("mean")) else "—"))
    return rows


def _narrow_row(row: tuple[str, ...], task: str | None) -> tuple[str, ...]:
    """A row for a console under ~110 columns: task and metric in one cell (the task only where it
    changes), an interval under its value, so nothing wraps inside a number or a phrase."""
    label, metric, base, champ, cand, d_champ, d_base = row
    name = label.strip()
    short = name.split("/", 1)[-1]  # a source row sits under its task: its source name is enough
    shown = ("  " if label.startswith(" ") else "") + (f"{short} " if name != task else "  ") + metric
    split = lambda cell: cell.replace(" [", "\n[", 1)  # noqa: E731
    return shown, base, champ, split(cand), split(d_champ), d_base


def print_summary_table(metrics: dict, console=None) -> None:
    """The per-task summary as a rich table, deltas coloured like the HTML report, then the gate."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    con = console or Console()
    narrow = con.width < 110
    sha = (metrics.get("eval_set_sha256") or "")[:12]
    champ = metrics.get("champion_version")
    table = Table(title=f"Evaluation on {metrics.get('n_examples')} examples (eval set {sha}), "
                        f"champion {'v' + str(champ) if champ is not None else 'none'}",
                  **({"box": box.SIMPLE_HEAD, "padding": (0, 1, 0, 0), "show_edge": False} if narrow else {}))
    columns = (("task · metric",) + SUMMARY_COLUMNS[2:]) if narrow else SUMMARY_COLUMNS
    for col in columns:
        text_col = col in ("task", "metric", "task · metric")
        table.add_column(col.replace(" [", "\n[") if narrow else col, justify="left" if text_col else "right",
                         no_wrap=True)
    styles = {"better": "green", "worse": "red", "": ""}
    task = None
    for (label, _, lower, v), row in zip(summary_slices(metrics), summary_rows(metrics)):
        if narrow:
            row, task = _narrow_row(row, task), label.strip()
        cells = [Text(c) for c in row]
        cells[-2].stylize(styles[delta_class(v["delta"].get("champion"), lower)])
        cells[-1].stylize(styles[delta_class(v["delta"].get("base"), lower)])
        table.add_row(*cells)
    con.print(table)
    gate = metrics.get("gate") or {}
    verdict = "promote" if gate.get("promote") else "keep"
    # soft_wrap: a long verdict is one line in a log file; a terminal wraps it at its edge, not mid-word.
    con.print(Text(f"gate: {verdict}", style="bold green" if gate.get("promote") else "bold yellow")
              + Text(f" (vs {gate.get('baseline', '?')}): {gate.get('reason', '')}"), soft_wrap=True)
    for c in gate.get("checks", []):
        con.print(Text("  ✓ " if c.get("passed") else "  ✗ ", style="green" if c.get("passed") else "red")
                  + Text(f"{c.get('name', '')}: {c.get('detail', '')}"), soft_wrap=True)
