"""MLflow unavailable during register: a clear error, the champion left alone, and a rerun that
registers exactly one version. A real `mlflow server` sits behind the fault proxy (tests/faults/proxy.py)."""
from __future__ import annotations

import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from components.register.core import REGISTERED_TAG, RegistryUnavailableError, run_register
from tests.faults.proxy import FaultProxy
from tests.mlflow_server import mlflow_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(s3_server, tmp_path_factory):
    """One server for the module (it takes ~20 s to start); each test registers its own model name."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow"), s3_server.endpoint, "s3://mixtune/mlflow-server") as found:
        yield found


@pytest.fixture
def mlflow_behind_proxy(server, tiny_config, request, monkeypatch):
    """(config whose tracking URI is the proxy, the proxy, a client that bypasses the proxy)."""
    # Few, fast retries: the production default (7, backoff 2) would make an outage take minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    url, port = server
    with FaultProxy(port) as proxy:
        cfg = tiny_config.model_copy(update={
            "tracking": tiny_config.tracking.model_copy(update={"uri": proxy.endpoint, "experiment": "faults"}),
            "registry": tiny_config.registry.model_copy(update={"model_name": request.node.name[5:40]})})
        yield cfg, proxy, MlflowClient(url)
    mlflow.set_tracking_uri(tiny_config.tracking.uri)


def _aliases(direct: MlflowClient, name: str) -> str:
    return " ".join(f"{k}=v{v}" for k, v in sorted(direct.get_registered_model(name).aliases.items()))


def _versions(direct: MlflowClient, name: str) -> list:
    try:
        return direct.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        return []


def test_mlflow_down_before_register(mlflow_behind_proxy, make_run, record):
    cfg, proxy, direct = mlflow_behind_proxy
    name = cfg.registry.model_name
    args = make_run("down-first", candidate=20.0)
    proxy.down = True
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError) as e:
        run_register(cfg, *args, "", "down-first")
    took = time.monotonic() - started
    message = str(e.value)
    proxy.down = False
    nothing = _versions(direct, name) == []
    again = run_register(cfg, *args, "", "down-first")
    versions = _versions(direct, name)
    ok = ("tracking.uri" in message and proxy.endpoint in message and nothing and again.version == "1"
          and len(versions) == 1 and again.promoted)
    record("MLflow down for all of register", "clear error; the rerun registers one version",
           f"error in {took:.1f} s naming tracking.uri; rerun: {len(versions)} version", ok)


def test_mlflow_down_in_the_middle_of_register(mlflow_behind_proxy, make_run, record):
    """The outage starts at the first alias call, after the version was created: the version exists
    without its aliases and the champion has not moved; the retried step completes that same version."""
    cfg, proxy, direct = mlflow_behind_proxy
    name = cfg.registry.model_name
    first = make_run("mid-1", candidate=20.0)
    run_register(cfg, *first, "", "mid-1")  # v1 is champion
    second = make_run("mid-2", candidate=30.0, champion=20.0, champion_version="1")
    proxy.down_on("registered-models/alias")
    with pytest.raises(RegistryUnavailableError):
        run_register(cfg, *second, "", "mid-2")
    proxy.down = False
    half = _aliases(direct, name)
    left_alone = half == "challenger=v1 champion=v1" and REGISTERED_TAG not in direct.get_model_version(name, "2").tags

    retried = run_register(cfg, *second, "", "mid-2")
    versions = _versions(direct, name)
    after = _aliases(direct, name)
    ok = (left_alone and retried.version == "2" and len(versions) == 2 and after == "challenger=v2 champion=v2"
          and direct.get_model_version(name, "2").tags.get(REGISTERED_TAG) == "complete")
    record("MLflow down mid-register (after create)", "champion unmoved; retry completes the same version",
           f"outage left {half}; retry: v{retried.version}, {len(versions)} versions, {after}", ok)

    # A later pipeline run that reused this trained model (same model URI) registers nothing new.
    rerun = run_register(cfg, *second, "", "mid-3")
    count = len(_versions(direct, name))
    ok = rerun.version == "2" and not rerun.promoted and rerun.reason.startswith("nothing new") and count == 2
    record("register again, same model, new pipeline run", "registers nothing new",
           f"v{rerun.version} kept, {count} versions, {_aliases(direct, name)}", ok)
