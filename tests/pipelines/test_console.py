"""The quiet console of local runs: kfp.local's output goes to per-step logs, the console gets one line per step."""
import io
import sys

from rich.console import Console

from components.common.progress import progress_line
from pipelines.console import StepConsole, routed_output

GREEN = "\x1b[92m"
RESET = "\x1b[0m"


def kfp_task(name: str, body: list[str], metadata: dict | None, status: str = "SUCCESS") -> list[str]:
    """The lines kfp 2.17's task dispatcher prints for one task (colours included)."""
    lines = [f"12:00:00.000 - INFO - Executing task {GREEN}'{name}'{RESET}", "12:00:00.001 - INFO - Streamed logs:", ""]
    lines += [f"    {line}" for line in body]
    lines.append(f"12:00:01.000 - INFO - Task {GREEN}'{name}'{RESET} finished with status {GREEN}{status}{RESET}")
    if status == "SUCCESS" and metadata is not None:
        lines += [f"12:00:01.001 - INFO - Task {GREEN}'{name}'{RESET} outputs:",
                  "    report: HTML( name='report',", "                  metadata={} )",
                  "    metrics: Metrics( name='metrics',",
                  f"                      uri='/tmp/x/{name}/metrics',", f"                      metadata={metadata} )"]
    return lines + (["-" * 80] if status == "SUCCESS" else [])  # a failure raises before the separator


def run_console(tmp_path, lines: list[str], terminal: bool = False, verbose: bool = False):
    out = io.StringIO()
    con = Console(file=out, force_terminal=terminal, width=100, color_system=None)
    sink = StepConsole(tmp_path / "logs", con, verbose=verbose)
    for line in lines:  # in pieces, as a pipe delivers them
        sink.write(line[:7])
        sink.write(line[7:] + "\n")
    return sink, out


def test_one_line_per_step_with_rows_and_every_line_in_the_step_logs(tmp_path):
    executor_json = '{"inputs": {"parameterValues": {"config_json": "' + "x" * 3000 + '"}}}'
    lines = (kfp_task("ingest", [executor_json, "reading 1 file"],
                      {"rows_read": 2008.0, "rows_kept": 2000.0, "rows_quarantined": 8.0, "rows_duplicate": 0.0})
             + kfp_task("train", ["loading", progress_line(400, 800, loss=1.25, eta_seconds=90.0), "exported"],
                        {"steps": 800.0, "final_loss": 0.619}))
    sink, out = run_console(tmp_path, lines)
    sink.finish()
    shown = out.getvalue().splitlines()
    assert shown[0].startswith("✓ ingest") and shown[0].endswith("rows 2008 → 2000 (8 quarantined)"), shown
    assert "train step 400/800 loss 1.250, eta 90 s" in shown[1]  # no terminal: a plain progress line
    assert shown[2].startswith("✓ train") and shown[2].endswith("800 steps, loss 0.619") and len(shown) == 3
    assert "x" * 3000 not in out.getvalue()  # the executor JSON is in the log, not on the console
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert logs == ["01-ingest.log", "02-train.log", "pipeline.log"]
    ingest = (tmp_path / "logs" / "01-ingest.log").read_text()
    assert executor_json in ingest and "rows_quarantined" in ingest and "\x1b[" not in ingest
    assert "reading 1 file" not in (tmp_path / "logs" / "02-train.log").read_text()
    assert len((tmp_path / "logs" / "pipeline.log").read_text().splitlines()) == len(lines)


def test_a_failed_step_gives_its_last_lines_and_log(tmp_path):
    body = [f"line {i}" for i in range(40)] + ["ValueError: data.sources[0]: no such file"]
    lines = kfp_task("ingest", ["ok"], {"rows_read": 3.0, "rows_kept": 3.0}) + kfp_task("templates", body, None, "FAILURE")
    sink, out = run_console(tmp_path, lines)
    failed = sink.failure()
    sink.finish()
    assert failed["step"] == "templates" and failed["log"].endswith("02-templates.log")
    assert failed["tail"][-2:] == ["    ValueError: data.sources[0]: no such file",
                                   "12:00:01.000 - INFO - Task 'templates' finished with status FAILURE"]
    assert len(failed["tail"]) == 25 and "line 0" not in "\n".join(failed["tail"])
    assert out.getvalue().splitlines()[1].startswith("✗ templates")


def test_progress_lines_are_throttled_without_a_terminal(tmp_path):
    body = [progress_line(s, 100, loss=2.0) for s in range(10, 101, 10)]
    sink, out = run_console(tmp_path, kfp_task("train", body, {"steps": 100.0}))
    sink.finish()
    progress = [ln for ln in out.getvalue().splitlines() if "step " in ln and "/100" in ln]
    assert [p.split("step ")[1].split()[0] for p in progress] == ["10/100", "100/100"]  # first and last only


def test_a_terminal_gets_a_live_bar_that_leaves_only_the_step_lines(tmp_path):
    body = ["\rtrain:  50%|#####     | 50/100" + progress_line(50, 100, loss=1.5, eta_seconds=10.0)]
    lines = kfp_task("train", body, {"steps": 100.0, "final_loss": 1.4})
    sink, out = run_console(tmp_path, lines[:4], terminal=True)  # up to the progress line
    bars = [t for t in sink._live.tasks if t.total == 100]
    assert [(t.completed, t.description) for t in bars] == [(50, "  step loss 1.500")]
    for line in lines[4:]:
        sink.write(line + "\n")
    assert sink._live.tasks == []  # the step ended: its live lines are gone
    sink.finish()
    assert "✓ train" in out.getvalue() and "steps, loss 1.400" in out.getvalue()


def test_verbose_echoes_everything_and_routed_output_restores_the_streams(tmp_path, capsys):
    before = sys.stdout, sys.stderr
    with routed_output(tmp_path / "logs", verbose=True) as sink:
        print("Executing task 'ingest'")
        print("a warning", file=sys.stderr)
        print("Task 'ingest' finished with status SUCCESS")
    assert (sys.stdout, sys.stderr) == before and sink.steps[0]["status"] == "done"
    out = capsys.readouterr().out
    assert "a warning" in out and "✓" not in out  # verbose: the raw lines, no summary lines
    assert "a warning" in (tmp_path / "logs" / "01-ingest.log").read_text()
