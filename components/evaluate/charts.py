"""PNG charts for the evaluation report: the primary metric per task, and the training loss curve.

Figures are built with the object API on an Agg canvas, never through pyplot: nothing is registered
in pyplot's global figure manager, so repeated calls (one per pipeline run, or many in tests) cannot
leak figures or depend on whatever backend the calling process selected.
"""
from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Fixed size and resolution, so reports from different runs look alike and stay small.
FIGSIZE = (9.0, 3.6)
DPI = 100
ROLE_COLORS = {"base": "#9e9e9e", "champion": "#5b8def", "candidate": "#2e7d32"}
ROLES = ("base", "champion", "candidate")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    buf = io.BytesIO()
    # No "Software" metadata: the same numbers give the same bytes on every matplotlib patch release.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def bar_chart_png(metrics: dict) -> bytes:
    """Grouped bars: for each task its primary metric for base / champion / candidate, CI error bars.

    A role without a score (no champion yet) leaves a gap in its group rather than a zero-height bar.
    """
    tasks = list(metrics.get("tasks", {}).items())
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    width = 0.26
    top = 0.0
    for i, role in enumerate(ROLES):
        xs, ys, his, err = [], [], [], [[], []]
        for j, (_, t) in enumerate(tasks):
            value = (t["scores"].get(role) or {}).get(t["primary"])
            if not _finite(value):
                continue
            ci = (t.get("ci") or {}).get(role)
            lo, hi = (ci if ci and all(_finite(c) for c in ci) else (value, value))
            xs.append(j + (i - 1) * width)
            ys.append(value)
            his.append(max(hi, value))
            err[0].append(max(0.0, value - lo))
            err[1].append(max(0.0, hi - value))
            top = max(top, hi, value)
        if xs:
            ax.bar(xs, ys, width, yerr=err, capsize=3, color=ROLE_COLORS[role], label=role,
                   error_kw={"elinewidth": 1, "ecolor": "#333333"})
            # Labels sit above the interval's cap, where they cannot collide with the error bar.
            for x, y, h in zip(xs, ys, his):
                ax.annotate(f"{y:.1f}", (x, h), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(tasks)), [f"{name}\n{t['primary']}" for name, t in tasks], fontsize=8)
    ax.set_ylim(0, max(top * 1.15, 1.0))
    ax.set_ylabel("primary metric")
    ax.set_title(f"Primary metric per task ({int(round(100 * metrics.get('confidence', 0.95)))}% CI)",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if tasks:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def loss_curve_png(history: list[dict] | None) -> bytes | None:
    """Training loss by step; None when there is nothing to plot (no history, or no finite loss)."""
    points = sorted((h["step"], h["loss"]) for h in history or []
                    if _finite(h.get("step")) and _finite(h.get("loss")))
    if not points:
        return None
    steps, losses = zip(*points)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, losses, color=ROLE_COLORS["candidate"], linewidth=1.2,
            marker="o" if len(points) <= 30 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"Training loss ({len(points)} logged steps, last {losses[-1]:.4f})", fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)
