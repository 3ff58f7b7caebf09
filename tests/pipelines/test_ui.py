"""`mixtune ui`: the MLflow UI over a local run's state, with working artifact views.

`check_ui` runs against the finished local run of tests/pipelines/test_end_to_end.py: MLflow's REST API
serves the evaluate run's artifacts, and headless Chromium renders the report, the run's artifacts and
the registered model's aliases (screenshots in test-artifacts/ui/).
"""
import signal
import subprocess
import time
from pathlib import Path

import requests

from pipelines.embedded import free_ports
from tests.browser import chromium, click_text, images_loaded, page_text, shots_dir, wait_for_text
from tests.pipelines.test_serve_cli import BIN, Started

LAYOUT = "?workflowType=machine_learning"


def check_ui(common: list[str], cwd: Path, experiment_id: str, evaluate_run: str, model: str, report: Path) -> None:
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    with Started([str(BIN / "mixtune"), "ui", *common, "--port", str(port)], url, cwd, ready="/health") as ui:
        deadline = time.time() + 60  # the links are printed once the UI server answers
        while "Ctrl-C stops" not in (printed := ui.output()) and time.time() < deadline:
            time.sleep(0.5)
        assert f"{url}/#/experiments/{experiment_id}{LAYOUT}" in printed and f"#/models/{model}{LAYOUT}" in printed
        assert "newest report: file://" in printed, printed
        # The artifacts through MLflow's REST API: the UI server has the S3 endpoint and keys.
        listed = requests.get(f"{url}/api/2.0/mlflow/artifacts/list",
                              params={"run_id": evaluate_run, "path": "evaluate"}, timeout=30)
        assert listed.status_code == 200, listed.text
        assert {"evaluate/report.html", "evaluate/metrics.json"} <= {f["path"] for f in listed.json()["files"]}
        got = requests.get(f"{url}/get-artifact", params={"run_uuid": evaluate_run, "path": "evaluate/report.html"},
                           timeout=30)
        assert got.status_code == 200 and got.text.lstrip().lower().startswith("<!doctype html"), got.text[:300]
        browse(url, experiment_id, evaluate_run, model, report)
        # Ctrl-C stops the UI server and the S3 server with it.
        ui.proc.send_signal(signal.SIGINT)
        assert ui.proc.wait(timeout=60) == 0, ui.output()[-2000:]
        assert "stopped" in ui.output()
        try:
            requests.get(f"{url}/health", timeout=2)
            raise AssertionError(f"the MLflow UI still answers on {url} after Ctrl-C")
        except requests.ConnectionError:
            pass


def browse(url: str, experiment_id: str, evaluate_run: str, model: str, report: Path) -> None:
    shots = shots_dir("ui")
    with chromium() as b:
        b.get(report.as_uri())  # the local report: its charts are images that loaded
        wait_for_text(b, "Gate")
        loaded = images_loaded(b)
        assert loaded and all(loaded), loaded
        b.execute_script("document.images[0].scrollIntoView()")
        b.save_screenshot(str(shots / "report.png"))

        b.get(f"{url}/#/experiments/{experiment_id}/runs/{evaluate_run}/artifacts{LAYOUT}")
        click_text(b, "evaluate")
        click_text(b, "metrics.json")
        wait_for_text(b, "primary_task")  # the JSON preview, read from S3 by the UI server
        click_text(b, "report.html")
        wait_for_text(b, "evaluate/report.html")
        time.sleep(2)
        assert b.find_elements("tag name", "iframe"), "the report preview did not render"
        assert "Loading artifact failed" not in page_text(b)
        b.save_screenshot(str(shots / "evaluate-run-artifacts.png"))

        b.get(f"{url}/#/models/{model}{LAYOUT}")
        body = wait_for_text(b, "@ champion")
        assert "Version 1" in body and "@ challenger" in body
        b.save_screenshot(str(shots / "registered-model.png"))
        b.get(f"{url}/#/models/{model}/versions/1{LAYOUT}")  # its description: the gate's verdict and checks
        body = wait_for_text(b, "gate check")
        assert "champion: promoted" in body, body[:2000]
        b.save_screenshot(str(shots / "model-version.png"))


def test_ui_refuses_a_folder_without_state(tmp_path):
    done = subprocess.run([str(BIN / "mixtune"), "ui", "--workdir", str(tmp_path / "nothing")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no mixtune state in" in done.stderr and "Traceback" not in done.stderr, done.stderr
