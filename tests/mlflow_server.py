"""A real `mlflow server` for tests: SQLite behind it (standing in for PostgreSQL), artifacts proxied
to S3 (`--serve-artifacts`, as infra/base/mlflow runs it), in its own process group."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipelines.embedded import free_ports


@contextlib.contextmanager
def mlflow_server(workdir: Path, s3_endpoint: str, destination: str):
    """Yields (url, port); the server is killed with its workers on exit."""
    port = free_ports(1)[0]
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{workdir}/server.db", "--artifacts-destination", destination,
           "--serve-artifacts"]
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"mlflow server did not start:\n{log_path.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield url, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own process group: the workers go too
        proc.wait(timeout=30)
