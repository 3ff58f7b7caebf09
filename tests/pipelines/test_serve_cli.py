"""The serving commands as a user runs them, in subprocesses: `mixtune serve`, `python -m components.serve`
(how the KServe container starts), `mixtune package-model`, and `mixtune exec -- mlflow models serve`
(MLflow's own server on the same registered version)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import requests
import yaml

from components.common.mlflow_model import MLMODEL
from components.common.registry import resolve
from pipelines.cli import main
from pipelines.embedded import free_ports, stop_group
from tests.tiny_models import dialogues, register_dir, tiny_model_dirs

BIN = Path(sys.executable).parent
TEXTS = [t for _, t in dialogues(3)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dirs(tmp_path_factory.mktemp("cli-models"), seeds=(0,))[0]


@pytest.fixture
def config_file(tiny_config, tmp_path) -> Path:
    path = tmp_path / "mixtune.yaml"
    path.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    return path


class Started:
    """A server process: waits until /ready answers 200, stops it with SIGTERM on exit."""

    def __init__(self, cmd: list[str], url: str, cwd: Path, ready: str = "/ready", timeout: float = 180.0):
        self.url, self.ready, self.timeout = url, ready, timeout
        self.log = open(cwd / "server.log", "w+")
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "MIXTUNE_CACHE": str(cwd / "cache")})

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def __enter__(self) -> "Started":
        deadline = time.time() + self.timeout
        while True:
            assert self.proc.poll() is None, f"server exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            assert time.time() < deadline, f"not ready after {self.timeout:.0f} s:\n{self.output()[-3000:]}"
            try:
                if requests.get(self.url + self.ready, timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        stop_group(self.proc, timeout=60)
        self.log.close()


def predict(url: str, texts: list[str]) -> requests.Response:
    return requests.post(f"{url}/invocations", json={"inputs": texts}, timeout=120)


def test_mixtune_serve_answers_with_the_champion_and_stops_on_sigterm(tiny_config, store, model_dir, config_file,
                                                                      tmp_path):
    version = register_dir(tiny_config, store, model_dir, "c1", alias="champion")
    expected = list(mlflow.pyfunc.load_model(f"models:/{tiny_config.registry.model_name}/{version}").predict(TEXTS))
    port = free_ports(1)[0]
    cmd = [str(BIN / "mixtune"), "serve", "--config", str(config_file), "--external-s3", "--port", str(port)]
    with Started(cmd, f"http://127.0.0.1:{port}", tmp_path) as server:
        r = predict(server.url, TEXTS)
        assert r.status_code == 200 and r.json()["predictions"] == expected
        assert r.headers["X-Mixtune-Model-Version"] == version
        assert requests.get(server.url + "/version", timeout=5).json()["version"] == version
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) in (0, 128 + signal.SIGTERM)
        assert f"on http://127.0.0.1:{port}" in server.output()


def test_the_container_command_serves_a_version_prefix(tiny_config, store, model_dir, config_file, tmp_path):
    """What the InferenceService runs: a fixed version's files, no registry."""
    version = register_dir(tiny_config, store, model_dir, "c2")
    uri = resolve(tiny_config.registry.model_name, version, fetch=False).uri
    port = free_ports(1)[0]
    cmd = [sys.executable, "-m", "components.serve", "--config", str(config_file), "--model-uri", uri,
           "--name", tiny_config.registry.model_name, "--version", version, "--host", "127.0.0.1", "--port", str(port)]
    with Started(cmd, f"http://127.0.0.1:{port}", tmp_path) as server:
        r = predict(server.url, TEXTS[:1])
        assert r.status_code == 200 and r.headers["X-Mixtune-Model-Version"] == version
        # The prefix was copied into the local cache (as KServe's storage initializer copies it to /mnt/models).
        assert requests.get(server.url + "/version", timeout=5).json()["source"].startswith(str(tmp_path / "cache"))


def test_serve_without_any_state_says_what_to_do(tmp_path, monkeypatch, capsys, s3_server):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"endpoint_url": s3_server.endpoint, "bucket": "mixtune-test"},
                                   "tracking": {"uri": "sqlite:///nothing-here/mlflow.db"}}))
    assert main(["serve", "--config", str(cfg), "--external-s3"]) == 1
    assert "no MLflow database at" in capsys.readouterr().err and not (tmp_path / "nothing-here" / "mlflow.db").exists()


def test_package_model_adds_the_mlmodel_in_place(tiny_config, store, model_dir, config_file, capsys):
    old = register_dir(tiny_config, store, model_dir, "c3", alias="champion", package=False)
    uri = resolve(tiny_config.registry.model_name, old, fetch=False).uri
    weights = {u: etag for u, _, etag in store.list_meta(uri)}
    common = ["--config", str(config_file), "--external-s3"]
    assert main(["package-model", "--version", old, *common]) == 0
    assert f"v{old}: written" in capsys.readouterr().out
    assert store.exists(f"{uri}/{MLMODEL}")
    assert all(etag == {u: e for u, _, e in store.list_meta(uri)}[u] for u, etag in weights.items())
    assert mlflow.pyfunc.load_model(f"models:/{tiny_config.registry.model_name}@champion").predict(TEXTS[:1])
    assert main(["package-model", "--all", *common]) == 0
    assert "already an MLflow model" in capsys.readouterr().out
    assert main(["package-model", "--version", "99", *common]) == 1
    assert "has no version 99" in capsys.readouterr().err


@pytest.mark.slow
def test_mlflow_models_serve_answers_from_the_registry(tiny_config, store, model_dir, config_file, tmp_path):
    """MLflow's own server on models:/<name>@champion, through `mixtune exec` (the state's S3 and MLflow)."""
    version = register_dir(tiny_config, store, model_dir, "c4", alias="champion")
    expected = list(mlflow.pyfunc.load_model(f"models:/{tiny_config.registry.model_name}/{version}").predict(TEXTS))
    port = free_ports(1)[0]
    cmd = [str(BIN / "mixtune"), "exec", "--config", str(config_file), "--external-s3", "--", "mlflow", "models",
           "serve", "-m", f"models:/{tiny_config.registry.model_name}@champion", "--env-manager", "local",
           "-p", str(port)]
    with Started(cmd, f"http://127.0.0.1:{port}", tmp_path, ready="/ping") as server:
        r = predict(server.url, TEXTS)
        assert r.status_code == 200 and r.json() == {"predictions": expected}
