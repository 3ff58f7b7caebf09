"""The online server over real HTTP, with versions in the real SQLite registry and SeaweedFS: the
scoring protocol, dynamic batching, readiness, metrics, and following the alias as it moves."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pandas as pd
import requests
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from mlflow.tracking import MlflowClient

from components.common.registry import REPLACED_TAG
from components.register.aliases import rollback
from components.register.package import package_version
from tests.components.serve.conftest import invoke, metric, with_serve
from tests.tiny_models import dialogues, register_dir

HEADER = "X-Mixtune-Model-Version"
TEXTS = [t for _, t in dialogues(6)]


def pyfunc_predict(cfg, version: str, texts: list[str]) -> list[str]:
    return list(mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}/{version}").predict(texts))


def test_serves_the_champion_over_mlflows_scoring_protocol(serve, serve_cfg, store, served_dirs):
    v1 = register_dir(serve_cfg, store, served_dirs[0], "s1", alias="champion")
    expected = pyfunc_predict(serve_cfg, v1, TEXTS)
    assert all(expected) and len(set(expected)) > 1
    with serve() as (url, parts):
        r = invoke(url, TEXTS)
        assert r.status_code == 200 and r.json() == {"predictions": expected}
        assert r.headers[HEADER] == v1 and r.headers["X-Mixtune-Model-Name"] == serve_cfg.registry.model_name
        for body in ({"instances": TEXTS}, {"dataframe_records": [{"dialogue": t} for t in TEXTS]},
                     {"dataframe_split": {"columns": ["dialogue"], "data": [[t] for t in TEXTS]}}):
            assert requests.post(f"{url}/invocations", json=body, timeout=60).json()["predictions"] == expected
        # MLflow's own client, unchanged: it pings /ping and posts a DataFrame as dataframe_split.
        host, port = url[len("http://"):].split(":")
        client = ScoringServerClient(host, int(port))
        client.wait_server_ready(timeout=10)
        answer = client.invoke(pd.DataFrame({"dialogue": TEXTS[:3]}))
        assert answer.get_predictions().iloc[:, 0].tolist() == expected[:3]

        version = requests.get(f"{url}/version", timeout=5)
        assert version.status_code == 200 and version.headers[HEADER] == v1
        info = version.json()
        assert (info["model_name"], info["version"], info["alias"], info["following"]) == (
            serve_cfg.registry.model_name, v1, "champion", "champion")
        assert info["source"] == f"models:/{serve_cfg.registry.model_name}/{v1}" and info["loaded_at"].endswith("Z")
        assert requests.get(f"{url}/health", timeout=5).json() == {"status": "alive"}
        assert requests.get(f"{url}/ready", timeout=5).json() == {"ready": True, "version": v1}
        text = requests.get(f"{url}/metrics", timeout=5).text
        assert metric(text, "mixtune_serve_model_info", version=v1, alias="champion") == 1
        assert metric(text, "mixtune_serve_requests_total", route="/invocations", status="200") == 5
        assert metric(text, "mixtune_serve_request_seconds_count") == 5
        assert metric(text, "mixtune_serve_model_swaps_total") == 1


def test_requests_that_arrive_together_are_generated_together(serve, serve_cfg, store, served_dirs):
    register_dir(serve_cfg, store, served_dirs[0], "s2", alias="champion")
    alone = {}
    with serve(with_serve(serve_cfg, max_batch=1, max_wait_ms=0.0)) as (url, _):
        for t in TEXTS:
            alone[t] = invoke(url, [t]).json()["predictions"][0]
        off = requests.get(f"{url}/metrics", timeout=5).text
    assert metric(off, "mixtune_serve_batch_requests_count") == len(TEXTS)
    assert metric(off, "mixtune_serve_batch_inputs_sum") == len(TEXTS)

    with serve(with_serve(serve_cfg, max_batch=16, max_wait_ms=500.0)) as (url, _):
        with ThreadPoolExecutor(len(TEXTS)) as pool:
            answers = list(pool.map(lambda t: invoke(url, [t]), TEXTS))
        on = requests.get(f"{url}/metrics", timeout=5).text
    assert [a.status_code for a in answers] == [200] * len(TEXTS)
    assert [a.json()["predictions"][0] for a in answers] == [alone[t] for t in TEXTS]  # same text, batched or not
    batches = metric(on, "mixtune_serve_batch_requests_count")
    assert batches < len(TEXTS) and metric(on, "mixtune_serve_batch_requests_sum") == len(TEXTS)


def test_not_ready_until_the_alias_exists_then_serves_it(serve, serve_cfg, store, served_dirs):
    with serve(wait_ready=False) as (url, _):
        deadline = time.time() + 30
        while "has no alias" not in (ready := requests.get(f"{url}/ready", timeout=5)).json()["message"]:
            assert ready.status_code == 503 and time.time() < deadline, ready.text  # the first poll is under way
            time.sleep(0.1)
        assert ready.status_code == 503 and "has no alias 'champion' yet" in ready.json()["message"]
        assert requests.get(f"{url}/health", timeout=5).status_code == 200
        r = invoke(url, TEXTS[:1])
        assert r.status_code == 503 and r.json()["error_code"] == "NOT_READY" and r.headers["Retry-After"]
        assert requests.get(f"{url}/version", timeout=5).status_code == 503
        v = register_dir(serve_cfg, store, served_dirs[0], "s3", alias="champion")
        deadline = time.time() + 30
        while requests.get(f"{url}/ready", timeout=5).status_code != 200:
            assert time.time() < deadline
            time.sleep(0.1)
        assert invoke(url, TEXTS[:1]).headers[HEADER] == v


class Load:
    """Clients posting one dialogue at a time until stopped; every answer is kept with its timing."""

    def __init__(self, url: str, clients: int = 4):
        self.url, self.stop, self.rows, self.lock = url, threading.Event(), [], threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, i: int) -> None:
        while not self.stop.is_set():
            sent = time.time()
            r = invoke(self.url, [TEXTS[i % len(TEXTS)]])
            with self.lock:
                self.rows.append((sent, time.time(), r.status_code, r.headers.get(HEADER)))

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_follows_the_alias_under_load_without_a_failed_request(serve, serve_cfg, store, served_dirs):
    name, client = serve_cfg.registry.model_name, MlflowClient()
    v1 = register_dir(serve_cfg, store, served_dirs[0], "s4", alias="champion")
    v2 = register_dir(serve_cfg, store, served_dirs[1], "s5")
    poll = 3.0  # loading the new version takes ~1 s here; two polls leave room for it
    with serve(with_serve(serve_cfg, poll_seconds=poll)) as (url, parts), Load(url) as load:
        time.sleep(1.5)
        moved_to_v2 = time.time()
        client.set_model_version_tag(name, v2, REPLACED_TAG, v1)
        client.set_registered_model_alias(name, "champion", v2)  # a promotion
        time.sleep(2 * poll + 1.0)
        moved_to_v1 = time.time()
        rollback(serve_cfg, reason="test: back to v1")  # `mixtune rollback` is followed the same way
        time.sleep(2 * poll + 1.0)
    rows = sorted(load.rows)
    assert rows and {status for _, _, status, _ in rows} == {200}, "a request failed during the swaps"
    for moved, old, new in ((moved_to_v2, v1, v2), (moved_to_v1, v2, v1)):
        first_new = min(got for sent, got, _, v in rows if sent >= moved and v == new)
        assert first_new - moved <= 2 * poll, f"v{new} answered {first_new - moved:.1f} s after the move"
        # The swap is atomic: nothing sent after the first answer from the new version gets the old one.
        window = [v for sent, _, _, v in rows if first_new <= sent < moved + 2 * poll + 1.0]
        assert window and set(window) == {new}
    text = parts.metrics.text().decode()
    assert metric(text, "mixtune_serve_model_swaps_total") == 3
    assert metric(text, "mixtune_serve_model_info", version=v1) == 1
    assert metric(text, "mixtune_serve_model_info", version=v2) == 0


def test_a_version_that_cannot_load_is_not_swapped_in(serve, serve_cfg, store, served_dirs):
    name, client = serve_cfg.registry.model_name, MlflowClient()
    v1 = register_dir(serve_cfg, store, served_dirs[0], "s6", alias="champion")
    v2 = register_dir(serve_cfg, store, served_dirs[1], "s7", package=False)  # registered before MLmodels
    with serve() as (url, parts):
        client.set_registered_model_alias(name, "champion", v2)
        time.sleep(1.5)
        r = invoke(url, TEXTS[:1])
        assert r.status_code == 200 and r.headers[HEADER] == v1  # the old version keeps serving
        info = requests.get(f"{url}/version", timeout=5).json()
        assert info["version"] == v1 and "run `mixtune package-model --version N`" in info["last_error"]
        assert metric(parts.metrics.text().decode(), "mixtune_serve_model_load_failures_total", version=v2) >= 1
        package_version(serve_cfg, v2)  # fixed in place: the retry picks it up
        deadline = time.time() + 30
        while invoke(url, TEXTS[:1]).headers[HEADER] != v2:
            assert time.time() < deadline, "the repaired version was never swapped in"
            time.sleep(0.2)


def test_a_fixed_version_or_folder_is_served_as_is(serve, serve_cfg, store, served_dirs, tmp_path):
    name, client = serve_cfg.registry.model_name, MlflowClient()
    v1 = register_dir(serve_cfg, store, served_dirs[0], "s8", alias="champion")
    v2 = register_dir(serve_cfg, store, served_dirs[1], "s9")
    with serve(with_serve(serve_cfg, model=v1)) as (url, _):
        client.set_registered_model_alias(name, "champion", v2)
        time.sleep(1.0)
        r = invoke(url, TEXTS[:2])
        assert r.headers[HEADER] == v1 and requests.get(f"{url}/version", timeout=5).json()["following"] is None
    folder = mlflow.artifacts.download_artifacts(f"models:/{name}/{v2}", dst_path=str(tmp_path / "mnt-models"))
    with serve(folder=folder, name=name, version=v2) as (url, _):  # how KServe runs it: /mnt/models
        r = invoke(url, TEXTS[:2])
        assert r.headers[HEADER] == v2 and r.json()["predictions"] == pyfunc_predict(serve_cfg, v2, TEXTS[:2])
