"""What `mixtune run --local` shows while the DAG runs: one line per step and the training progress.

kfp.local prints every step's streamed output, its executor JSON and its outputs to sys.stdout. The
run's stdout and stderr go through a `StepConsole` instead: every line lands in the run's log folder
(`pipeline.log`, and `<n>-<step>.log` for each step), and the console shows only what a person
follows: each step's state, time and rows in and out, the training bar with loss and ETA, and on a
failure the failing step's last lines and the path of its log. `verbose=True` also echoes every line.
"""
from __future__ import annotations

import ast
import contextlib
import json
import re
import sys
import threading
import time
from pathlib import Path

from rich.console import Console

from components.common.progress import PROGRESS

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_START = re.compile(r"Executing task '([^']+)'")
TASK_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
METADATA = re.compile(r"metadata=(\{.*\})")
ERROR_LINE = re.compile(r"\s*[\w.]*(Error|Exception|Failed|Interrupt)\b[^:]*: ")  # a traceback's last line
PLAIN_PROGRESS_SECONDS = 30  # without a terminal, a progress line at most this often


def rows_note(step: str, m: dict) -> str:
    """Rows in and out of a step, from the metrics its KFP wrapper logged."""
    if step == "ingest" and "rows_read" in m:
        extra = [f"{int(m[k])} {k[5:]}" for k in ("rows_quarantined", "rows_duplicate") if m.get(k)]
        return f"rows {int(m['rows_read'])} → {int(m['rows_kept'])}" + (f" ({', '.join(extra)})" if extra else "")
    if step == "templates":
        n = sum(v for k, v in m.items() if k.startswith("examples_"))
        return f"{int(n)} examples" + (f", {int(m['replay_examples'])} replayed" if m.get("replay_examples") else "")
    if step.startswith("shards"):
        rows = sum(v for k, v in m.items() if k.endswith("_rows"))
        return f"{int(rows)} rows tokenized" if rows else ""
    if step == "train" and "steps" in m:
        return f"{int(m['steps'])} steps" + (f", loss {m['final_loss']:.3f}" if "final_loss" in m else "")
    if step == "evaluate" and "n_examples" in m:
        return f"{int(m['n_examples'])} examples scored"
    if step == "register" and "version" in m:
        return f"version {int(m['version'])}" + (", promoted" if m.get("promoted") else ", not promoted")
    return ""


class StepConsole:
    """A file-like sink for the run's stdout/stderr that writes the logs and keeps the console short."""

    def __init__(self, log_dir: Path, console: Console | None = None, verbose: bool = False):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.console = console or Console(stderr=False)
        self.verbose = verbose
        self.all = open(self.log_dir / "pipeline.log", "a", encoding="utf-8", buffering=1)
        self.steps: list[dict] = []  # {name, log, started, seconds, status, note}
        self.current: dict | None = None
        self.last_finished: dict | None = None
        self._pending = ""
        self._lock = threading.Lock()
        self._live = None  # rich Progress for a terminal, started with the first step
        self._plain_at = 0.0

    # --- the file interface -------------------------------------------------------------------
    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._line(line)
        return len(text)

    def flush(self) -> None:
        for f in [self.all] + ([self.current["file"]] if self.current else []):
            f.flush()

    def isatty(self) -> bool:
        return False

    # --- one line of output -------------------------------------------------------------------
    def _line(self, raw: str) -> None:
        line = ANSI.sub("", raw).rstrip("\r")
        self.all.write(line + "\n")
        if self.verbose:
            self.console.file.write(raw + "\n")
        if m := TASK_START.search(line):
            self._start(m.group(1))
        elif m := TASK_END.search(line):
            self._end(m.group(1), m.group(2))
        target = self.current or self.last_finished
        if target:
            target["file"].write(line + "\n")
        if (at := line.rfind(PROGRESS)) >= 0:  # tqdm's '\r' redraws may share its line
            with contextlib.suppress(ValueError):
                self._progress(json.loads(line[at + len(PROGRESS):]))
        elif self.last_finished and not self.current:
            # The outputs block: every artifact's metadata (an HTML report's is empty), then kfp's rule.
            if m := METADATA.search(line):
                with contextlib.suppress(ValueError, SyntaxError):
                    self.last_finished.setdefault("metrics", {}).update(ast.literal_eval(m.group(1)))
            elif line.startswith("-" * 20):
                self.last_finished["note"] = rows_note(self.last_finished["name"], self.last_finished.get("metrics", {}))
                self._show(self.last_finished)

    def _start(self, name: str) -> None:
        log = self.log_dir / f"{len(self.steps) + 1:02d}-{name}.log"
        self.current = {"name": name, "log": log, "file": open(log, "a", encoding="utf-8", buffering=1),
                        "started": time.time(), "status": "running", "note": ""}
        self.steps.append(self.current)
        if live := self._live_display():
            self.current["task"] = live.add_task(f"{name} running", total=None)

    def _end(self, name: str, status: str) -> None:
        step = self.current if self.current and self.current["name"] == name else None
        if step is None:
            return
        if self._live is not None:
            for key in ("task", "bar"):
                if key in step:
                    self._live.remove_task(step.pop(key))
        step["seconds"] = time.time() - step["started"]
        step["status"] = "done" if status == "SUCCESS" else "FAILED"
        self.current, self.last_finished = None, step
        if step["status"] == "FAILED":
            self._show(step)  # no outputs block follows a failure

    def _show(self, step: dict) -> None:
        """A step's one line, once its rows are known (after its outputs block) or on failure."""
        if self.verbose or step.get("shown"):
            return
        step["shown"] = True
        mark = "[green]✓[/]" if step["status"] == "done" else "[red]✗[/]"
        note = f"  {step['note']}" if step["note"] else ""
        self.console.print(f"{mark} {step['name']:<12} {step['seconds']:6.1f} s{note}", highlight=False)

    def finish(self) -> None:
        """Show the steps whose outputs block named no metrics; close the files."""
        with self._lock:
            if self._pending:
                self._line(self._pending)
                self._pending = ""
            if self._live is not None:
                self._live.stop()
            for step in self.steps:
                if "seconds" in step:
                    step["note"] = step["note"] or rows_note(step["name"], step.get("metrics", {}))
                    self._show(step)
                step["file"].close()
            self.all.close()

    # --- live lines (a terminal only) and training progress -----------------------------------
    def _live_display(self):
        """One transient rich Progress for the running step and the train bar; None without a terminal."""
        if self.verbose or not self.console.is_terminal:
            return None
        if self._live is None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            # Not redirecting stdout: this object is stdout while the run lasts.
            self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console,
                                  transient=True, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self._live

    def _progress(self, p: dict) -> None:
        if self.verbose or self.current is None:
            return
        loss = f" loss {p['loss']:.3f}" if "loss" in p else ""
        live = self._live_display()
        if live is None:  # a log file: a line now and then, not a redraw per step
            if time.time() - self._plain_at >= PLAIN_PROGRESS_SECONDS or p["step"] >= p["total"]:
                self._plain_at = time.time()
                eta = p.get("eta_seconds")
                self.console.print(f"  {self.current['name']} step {p['step']}/{p['total']}{loss}"
                                   + (f", eta {eta:.0f} s" if eta is not None else ""), highlight=False)
            return
        if "bar" not in self.current:
            self.current["bar"] = live.add_task("", total=p["total"])
        live.update(self.current["bar"], completed=p["step"], description=f"  step{loss}")

    def failure(self) -> dict | None:
        """The failed step (name, log path, last lines), for the error message."""
        failed = [s for s in self.steps if s["status"] != "done"]
        if not failed:
            return None
        s = failed[-1]
        s["file"].flush()
        tail = [ln for ln in s["log"].read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        error = next((ln.strip() for ln in reversed(tail) if ERROR_LINE.match(ln)), None)
        return {"step": s["name"], "log": str(s["log"]), "tail": tail[-25:], "error": error}


@contextlib.contextmanager
def routed_output(log_dir: Path, verbose: bool = False):
    """Send this process's stdout and stderr through a StepConsole for the block; yields the console."""
    sink = StepConsole(log_dir, Console(file=sys.stdout, soft_wrap=True), verbose=verbose)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield sink
    finally:
        sink.finish()
