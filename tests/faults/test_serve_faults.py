"""Serving faults, each a row of the fault matrix: bad requests get a 4xx naming the problem (never a
5xx, never a dead worker), a request that cannot be served in time gets a 503, and a version that
cannot be served (pickled weights, a broken registry) never replaces the one serving."""
import json
import threading
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.common.mlflow_model import model_spec, write_mlflow_model
from components.common.storage import COMPLETE_MARKER, join
from components.common.tracking import MODEL_URI_TAG
from components.serve.follower import current_alias_version
from components.serve.models import load_version
from tests.components.serve.conftest import invoke, metric, with_serve
from tests.faults.test_safe_loading import pickle_only_dir
from tests.tiny_models import dialogues, register_dir

TEXT = dialogues(1)[0][1]
HEADER = "X-Mixtune-Model-Version"
LIMITS = dict(max_inputs=4, max_input_chars=2000, max_body_bytes=4096)

# (fault, body or raw bytes, content type, expected status, words the message must contain)
BAD_REQUESTS = [
    ("missing field", {"texts": [TEXT]}, "application/json", 400, "unknown field(s) ['texts']"),
    ("no input field at all", {}, "application/json", 400, "missing field: send exactly one of"),
    ("two input fields", {"inputs": [TEXT], "instances": [TEXT]}, "application/json", 400, "exactly one of"),
    ("inputs not a list", {"inputs": TEXT}, "application/json", 400, "inputs must be a list of strings"),
    ("wrong type in the list", {"inputs": [TEXT, 7]}, "application/json", 400, "inputs[1] is a JSON number"),
    ("null input", {"inputs": [None]}, "application/json", 400, "inputs[0] is a JSON null"),
    ("empty text", {"inputs": [TEXT, "  \n"]}, "application/json", 400, "inputs[1] is empty"),
    ("empty list", {"inputs": []}, "application/json", 400, "inputs is empty"),
    ("text too long", {"inputs": ["x" * 2001]}, "application/json", 400, "2001 characters; at most 2000"),
    ("too many inputs", {"inputs": [TEXT[:100]] * 5}, "application/json", 400, "5 inputs in one request; at most 4"),
    ("body too large", {"inputs": ["x" * 5000]}, "application/json", 413, "at most 4096 (serve.max_body_bytes)"),
    ("invalid JSON", b'{"inputs": ["a",', "application/json", 400, "not valid JSON"),
    ("not UTF-8", b'{"inputs": ["\xff\xfe"]}', "application/json", 400, "not UTF-8"),
    ("JSON that is not an object", [TEXT], "application/json", 400, "got a JSON array"),
    ("wrong content type", b"Customer: hi", "text/plain", 415, "send application/json"),
    ("params sent", {"inputs": [TEXT], "params": {"max_new_tokens": 500}}, "application/json", 400,
     "params are not supported"),
    ("dataframe without the column", {"dataframe_records": [{"a": TEXT, "b": TEXT}]}, "application/json", 400,
     "send one column, or one named 'dialogue'"),
    ("dataframe_split rows of the wrong width", {"dataframe_split": {"columns": ["dialogue"], "data": [[TEXT, 1]]}},
     "application/json", 400, "dataframe_split.data[0] must be a list of 1 value(s)"),
]


@pytest.fixture
def champion(serve_cfg, store, served_dirs) -> str:
    return register_dir(serve_cfg, store, served_dirs[0], "f1", alias="champion")


def post(url: str, body, ctype: str, **kw) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{url}/invocations", data=data, headers={"Content-Type": ctype}, timeout=60, **kw)


def test_bad_requests_get_a_4xx_that_says_why(serve, serve_cfg, champion, record):
    with serve(with_serve(serve_cfg, **LIMITS)) as (url, parts):
        for fault, body, ctype, status, words in BAD_REQUESTS:
            r = post(url, body, ctype)
            message = r.json().get("message", "") if r.headers.get("content-type") == "application/json" else r.text
            record(f"serve: {fault}", f"{status} naming it", f"{r.status_code}: {message[:70]}",
                   r.status_code == status and words in message and r.headers.get(HEADER) == champion)
        # A chunked body with no Content-Length is cut off at the limit too.
        r = requests.post(f"{url}/invocations", data=iter([b'{"inputs": ["', b"x" * 5000, b'"]}']),
                          headers={"Content-Type": "application/json"}, timeout=60)
        record("serve: body too large, chunked (no Content-Length)", "413", str(r.status_code), r.status_code == 413)
        ok = invoke(url, [TEXT])
        record("serve: after every bad request", "still answers 200", str(ok.status_code), ok.status_code == 200)
        text = parts.metrics.text().decode()
        assert metric(text, "mixtune_serve_errors_total", kind="bad_request") == 16
        assert metric(text, "mixtune_serve_errors_total", kind="body_too_large") == 2


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                             st.sampled_from(["inputs", "instances", "dataframe_records", "dataframe_split",
                                              "params", "columns", "data", "dialogue", "x"]), inner, max_size=3),
                         max_leaves=12))
def test_no_json_body_makes_the_server_fail(server_url, body):
    r = post(server_url, body, "application/json")
    assert r.status_code in (200, 400, 413), (body, r.status_code, r.text)
    assert r.json().get("predictions") is not None or r.json().get("message")


@pytest.fixture
def server_url(tmp_path_factory, s3_server):
    """One server for the whole fuzz: hypothesis runs the test body many times within one fixture."""
    from components.common.config import parse_config
    from components.common.storage import Store
    from components.common.tracking import connect
    from components.serve.server import build_server
    from tests.components.serve.conftest import running
    from tests.tiny_models import tiny_model_dirs

    tmp = tmp_path_factory.mktemp("fuzz")
    s3_server.create_bucket("mixtune-test")
    cfg = parse_config({"storage": {"bucket": "mixtune-test", "prefix": "fuzz", "endpoint_url": s3_server.endpoint},
                        "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"},
                        "generation": {"max_new_tokens": 4}, "serve": {"poll_seconds": 0.5, **LIMITS}})
    connect(cfg)
    register_dir(cfg, Store(cfg.storage), tiny_model_dirs(tmp, seeds=(0,))[0], "fz", alias="champion")
    with running(build_server(cfg, tmp / "cache")) as url:
        yield url


class Slow:
    """The real model, made slow: a request that waits too long must get 503, not hang."""

    def __init__(self, pyfunc, seconds: float):
        self.pyfunc, self.seconds = pyfunc, seconds

    def predict(self, texts):
        time.sleep(self.seconds)
        return self.pyfunc.predict(texts)


def slow_loader(seconds: float):
    def load(name, version, alias, cache):
        model = load_version(name, version, alias, cache)
        model.pyfunc = Slow(model.pyfunc, seconds)
        return model
    return load


def test_a_request_not_served_in_time_gets_503(serve, serve_cfg, champion, record):
    cfg = with_serve(serve_cfg, request_timeout_seconds=0.5, max_queue=2)
    with serve(cfg, loader=slow_loader(1.5)) as (url, _):
        started = time.time()
        r = invoke(url, [TEXT])
        took = time.time() - started
        record("serve: generation slower than serve.request_timeout_seconds", "503 in time, not a hang",
               f"{r.status_code} after {took:.1f} s: {r.json()['message'][:60]}",
               r.status_code == 503 and took < 1.4 and "not answered within 0.5 s" in r.json()["message"])
        results = []
        threads = [threading.Thread(target=lambda: results.append(invoke(url, [TEXT, TEXT]))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        kinds = sorted(r.json()["error_code"] for r in results if r.status_code == 503)
        record("serve: more inputs waiting than serve.max_queue", "503 overloaded at once",
               f"{[r.status_code for r in results]} {kinds}", "OVERLOADED" in kinds)
        time.sleep(2.0)
        assert requests.get(f"{url}/health", timeout=5).status_code == 200


def test_a_pickle_only_version_is_never_swapped_in(serve, serve_cfg, store, champion, tmp_path, record):
    marker = tmp_path / "UNPICKLED"
    local = pickle_only_dir(tmp_path / "hostile", marker)
    uri = join(store.root, "runs", "hostile", "train", "model")
    store.upload_dir(local, uri)
    store.put_bytes(join(uri, COMPLETE_MARKER), b"")
    write_mlflow_model(store, uri, model_spec(serve_cfg))  # an MLmodel beside pickled weights
    name, client = serve_cfg.registry.model_name, MlflowClient()
    hostile = str(client.create_model_version(name, source=uri, tags={MODEL_URI_TAG: uri}).version)
    with serve() as (url, parts):
        client.set_registered_model_alias(name, "champion", hostile)
        time.sleep(1.5)
        r = invoke(url, [TEXT])
        error = requests.get(f"{url}/version", timeout=5).json()["last_error"] or ""
        record("serve: champion moved to a version with only pickled weights", "refused, old version serves",
               f"{r.status_code} from v{r.headers.get(HEADER)}; marker {'PRESENT' if marker.exists() else 'absent'}",
               r.status_code == 200 and r.headers.get(HEADER) == champion and not marker.exists()
               and "no safetensors weights" in error and "pytorch_model.bin" in error)


def test_the_registry_going_away_does_not_stop_serving(serve, serve_cfg, champion, record):
    down = threading.Event()

    def lookup(name, alias):
        if down.is_set():
            raise MlflowException("API request to http://mlflow:5000 failed with ConnectionError")
        return current_alias_version(name, alias)

    with serve(lookup=lookup) as (url, _):
        down.set()
        time.sleep(1.0)
        r = invoke(url, [TEXT])
        error = requests.get(f"{url}/version", timeout=5).json()["last_error"] or ""
        record("serve: MLflow registry unreachable while serving", "keeps serving, says why in /version",
               f"{r.status_code} from v{r.headers.get(HEADER)}; {error[:50]}",
               r.status_code == 200 and r.headers.get(HEADER) == champion and "registry lookup failed" in error)
