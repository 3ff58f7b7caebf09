"""Number formatting shared by the HTML report and the CLI summary table: the same figures, written alike."""
from __future__ import annotations

import math


def finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x: object) -> str:
    return f"{x:.2f}" if finite(x) else "—"


def ci(ci: list | tuple | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci and all(finite(c) for c in ci) else ""


def delta_text(d: dict | None) -> str:
    if not d or not finite(d.get("mean")):
        return "—"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def delta_class(d: dict | None, lower_is_better: bool = False) -> str:
    """'better' / 'worse' when the whole interval lies on one side of 0, else '' (not supported)."""
    if not d or not (finite(d.get("low")) and finite(d.get("high"))):
        return ""
    low, high = (-d["high"], -d["low"]) if lower_is_better else (d["low"], d["high"])
    return "better" if low > 0 else "worse" if high < 0 else ""
