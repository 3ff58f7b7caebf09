"""`mixtune ui`: open what local runs produced. The state folder's S3 server and the MLflow UI over its
SQLite store, until Ctrl-C.

The run artifacts live in the embedded S3 server, whose keys are new each time it starts; a plain
`mlflow ui` has neither its endpoint nor its keys, so every Artifacts tab fails. This starts both and
hands the UI server the endpoint and keys through its environment (MLflow's S3 artifact repository
reads MLFLOW_S3_ENDPOINT_URL and the AWS_* variables), so artifacts open in the UI and through MLflow's
REST API (`/api/2.0/mlflow/artifacts/list`, `/get-artifact`).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from components.common import tracking
from components.common.config import MixtuneConfig
from pipelines.embedded import free_ports, stop_group


class UIServerError(RuntimeError):
    pass


class MlflowUI:
    """`mlflow server` on the config's tracking store, in its own process group (its workers go with it)."""

    def __init__(self, cfg: MixtuneConfig, log_path: Path, host: str = "127.0.0.1", port: int | None = None):
        self.cfg, self.log_path, self.host = cfg, Path(log_path), host
        self.port = port or free_ports(1)[0]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowUI":
        env = {**os.environ}
        if self.cfg.storage.endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = self.cfg.storage.endpoint_url
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.cfg.tracking.uri,
               "--host", self.host, "--port", str(self.port), "--workers", "1"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    tail = self.log_path.read_text(errors="replace")[-1500:]
                    self.stop()
                    raise UIServerError(f"the MLflow UI did not start on port {self.port} (see {self.log_path}):\n"
                                        f"{tail}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=15)
            self.proc = None

    def __enter__(self) -> "MlflowUI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# MLflow 3's UI opens in its GenAI layout unless the link (or the browser's last choice) says otherwise.
LAYOUT = "?workflowType=machine_learning"


def links(cfg: MixtuneConfig, url: str, workdir: Path) -> list[str]:
    """What to open: the experiment, the newest pipeline run, the registered model, the newest local report."""
    tracking.connect(cfg)
    client = MlflowClient()
    lines = [f"MLflow UI: {url}/#/{LAYOUT}"]
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        lines.append(f"  experiment {exp.name}: {url}/#/experiments/{exp.experiment_id}{LAYOUT}")
        newest = client.search_runs([exp.experiment_id], f"tags.`{tracking.ROLE_TAG}` = 'pipeline'",
                                    order_by=["attributes.start_time DESC"], max_results=1)
        if newest:
            r = newest[0]
            lines.append(f"  newest pipeline run {r.info.run_name}: "
                         f"{url}/#/experiments/{exp.experiment_id}/runs/{r.info.run_id}{LAYOUT}")
    if any(True for _ in client.search_registered_models(f"name = '{cfg.registry.model_name}'")):
        lines.append(f"  registered model {cfg.registry.model_name}: {url}/#/models/{cfg.registry.model_name}{LAYOUT}")
    reports = sorted((workdir / "reports").glob("*/report.html"), key=lambda p: p.stat().st_mtime)
    if reports:
        lines.append(f"newest report: {reports[-1].as_uri()}")
    if cfg.storage.endpoint_url:
        lines.append(f"S3 endpoint: {cfg.storage.endpoint_url} (bucket {cfg.storage.bucket}; `mixtune exec` "
                     "gives a command its keys)")
    return lines


def wait_for_interrupt(ui: MlflowUI) -> None:
    """Block until Ctrl-C (or SIGTERM, which the CLI turns into SystemExit); fail if the server dies."""
    while ui.proc is not None and ui.proc.poll() is None:
        time.sleep(0.5)
    if ui.proc is not None:
        raise UIServerError(f"the MLflow UI stopped (exit {ui.proc.returncode}); see {ui.log_path}")
