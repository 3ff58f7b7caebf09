"""Start N local training processes with torchrun and wait for them.

torchrun (`python -m torch.distributed.run`) sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* for each
process, which is all `deepspeed.initialize` needs; it kills the others when one fails. Output is
streamed through (so progress shows in the step's log) and kept in a file for error reports.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import components

# The directory that holds the `components` package: workers import it with `-m`.
REPO_ROOT = Path(components.__file__).resolve().parent.parent


class WorkerFailed(RuntimeError):
    """A training process exited non-zero; carries the exit code and the end of the log."""

    def __init__(self, returncode: int, log_path: Path, tail: str):
        # torchrun itself exits 1; the failed rank's own code is in its error summary.
        found = re.search(r"exitcode\s*:\s*(-?\d+)", tail)
        self.worker_exit_code = int(found.group(1)) if found else returncode
        super().__init__(f"training worker failed with exit code {self.worker_exit_code} "
                         f"(torchrun {returncode}); last lines of {log_path}:\n{tail}")
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(device: str, nproc: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every rank inherits: accelerator choice, thread count, import path."""
    env = dict(os.environ)
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed would otherwise probe for CUDA
        # torchrun forces 1 thread per process when unset; share the cores instead.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    else:
        env.pop("DS_ACCELERATOR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def torchrun_command(nproc: int, port: int, target: list[str]) -> list[str]:
    """target is `-m module args...` or `script.py args...`."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(port),
        *target,
    ]


def _echo(chunk: bytes) -> None:
    out = getattr(sys.stdout, "buffer", None)  # test runners may swap in a text-only stdout
    if out is not None:
        out.write(chunk)
    else:
        sys.stdout.write(chunk.decode(errors="replace"))
    sys.stdout.flush()


def _tail(path: Path, lines: int = 30) -> str:
    """The workers' last lines plus torchrun's root-cause summary, without torchrun's own traceback."""
    text = path.read_text(errors="replace").replace("\r", "\n")
    summary = ""
    failed = text.rfind("ChildFailedError")
    if failed != -1:
        own_traceback = text.rfind("Traceback (most recent call last):", 0, failed)
        root = text.find("Root Cause", failed)
        summary = text[root:] if root != -1 else text[failed:]
        text = text[:own_traceback] if own_traceback != -1 else text[:failed]
    kept = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join(kept + summary.strip().splitlines())


def _forward_sigterm(proc: subprocess.Popen):
    """A pod being preempted gets SIGTERM in this process only: pass it on to torchrun, which passes it
    to the ranks; they write a checkpoint and exit, and the step then fails so that it is retried."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers can only be set from the main thread
    return signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))


def launch(target: list[str], nproc: int, device: str, log_path: Path,
           extra_env: dict[str, str] | None = None, echo: bool = True) -> None:
    """Run target on nproc local ranks; raise WorkerFailed if any rank fails."""
    cmd = torchrun_command(nproc, free_port(), target)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        log.write((" ".join(cmd) + "\n").encode())
        # Same working directory as the parent: relative paths in the config (a sqlite:/// tracking
        # URI, say) must mean the same file in every rank. Imports work through PYTHONPATH.
        proc = subprocess.Popen(cmd, env=worker_env(device, nproc, extra_env),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        previous = _forward_sigterm(proc)
        try:
            # Chunks, not lines: tqdm redraws with '\r' and would otherwise show up only at the end.
            while chunk := proc.stdout.read1(65536):
                log.write(chunk)
                if echo:
                    _echo(chunk)
            returncode = proc.wait()
        except BaseException:
            proc.terminate()  # torchrun forwards the signal to its workers, which checkpoint and stop
            proc.wait()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    if returncode != 0:
        raise WorkerFailed(returncode, log_path, _tail(log_path))
