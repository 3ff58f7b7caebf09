"""A real server for the serving tests: the app on uvicorn in a thread, on a free loopback port,
against the real SQLite registry and SeaweedFS of tests/conftest.py."""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
import requests

from components.common.config import MixtuneConfig
from components.common.tracking import connect
from components.serve.server import Parts, build_server
from pipelines.embedded import free_ports
from tests.tiny_models import tiny_model_dirs


@pytest.fixture(scope="session")
def served_dirs(tmp_path_factory) -> dict[int, Path]:
    """Two tiny T5s (seeds 0 and 1) that answer the same dialogue differently."""
    return tiny_model_dirs(tmp_path_factory.mktemp("serve-models"))


@pytest.fixture
def serve_cfg(tiny_config) -> MixtuneConfig:
    """Fast polling, so alias moves show within a second."""
    serve = tiny_config.serve.model_copy(update={"poll_seconds": 0.25, "max_wait_ms": 20.0})
    infer = tiny_config.infer.model_copy(update={"batch_size": 4})
    generation = tiny_config.generation.model_copy(update={"max_new_tokens": 8})
    cfg = tiny_config.model_copy(update={"serve": serve, "infer": infer, "generation": generation})
    connect(cfg)
    return cfg


def with_serve(cfg: MixtuneConfig, **settings) -> MixtuneConfig:
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(update=settings)})


@contextlib.contextmanager
def running(parts: Parts, wait_ready: bool = True, timeout: float = 120.0):
    """uvicorn serving parts.app until the block ends; yields the base URL."""
    import uvicorn

    port = free_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(parts.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while not server.started:
            assert thread.is_alive() and time.time() < deadline, "server did not start"
            time.sleep(0.05)
        while wait_ready and requests.get(f"{url}/ready", timeout=5).status_code != 200:
            assert time.time() < deadline, f"no model loaded: {requests.get(f'{url}/version').text}"
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def serve(serve_cfg, tmp_path):
    """serve(cfg=None, **build_server options) -> context manager yielding (url, parts)."""
    @contextlib.contextmanager
    def start(cfg: MixtuneConfig | None = None, wait_ready: bool = True, **options):
        parts = build_server(cfg or serve_cfg, tmp_path / "serve-cache", **options)
        with running(parts, wait_ready) as url:
            yield url, parts
    return start


def invoke(url: str, texts: list[str], **kw) -> requests.Response:
    return requests.post(f"{url}/invocations", json={"inputs": texts}, timeout=kw.pop("timeout", 120), **kw)


def metric(text: str, name: str, **labels) -> float | None:
    """One sample's value from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None
