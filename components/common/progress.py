"""The progress line a long step prints for `mixtune run --local`'s console (pipelines/console.py).

kfp.local streams a step's output line by line, so tqdm's carriage-return redraws reach the parent
only when the bar closes; this line, printed with a newline, arrives as it happens. It reads well in
a pod's log too."""
from __future__ import annotations

import json

PROGRESS = "MIXTUNE_PROGRESS "


def progress_line(step: int, total: int, **values) -> str:
    """`MIXTUNE_PROGRESS {"step": 40, "total": 800, "loss": 2.31, "eta_seconds": 95.0}`."""
    return PROGRESS + json.dumps({"step": step, "total": total, **{k: round(v, 4) for k, v in values.items()}})
