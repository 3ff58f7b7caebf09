"""The fault matrix's shared pieces: a results table (fault, expected, observed) printed at the end of
the run, and S3 behind a fault-injecting proxy (tests/faults/proxy.py)."""
from __future__ import annotations

import pytest

from components.common.config import StorageConfig
from components.common.storage import Store
# Fixtures the fault tests share with the step tests: a hand-built shards artifact, fake registered runs.
from tests.components.register.conftest import make_run  # noqa: F401
from tests.components.serve.conftest import serve, serve_cfg, served_dirs  # noqa: F401
from tests.components.train.conftest import shards_uri  # noqa: F401
from tests.faults.proxy import FaultProxy

RESULTS: list[tuple[str, str, str, bool]] = []


@pytest.fixture
def record():
    """record(fault, expected, observed, ok): one row of the table; ok is also asserted."""
    def add(fault: str, expected: str, observed: str, ok: bool) -> None:
        RESULTS.append((fault, expected, observed, bool(ok)))
        assert ok, f"{fault}: expected {expected}, observed {observed}"
    return add


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    widths = [max(len(row[i]) for row in RESULTS + [("fault", "expected", "observed", True)]) for i in range(3)]
    line = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    terminalreporter.section("fault matrix")
    terminalreporter.write_line(line.format("fault", "expected", "observed", "result"))
    for fault, expected, observed, ok in RESULTS:
        terminalreporter.write_line(line.format(fault, expected, observed, "ok" if ok else "FAILED"))


@pytest.fixture
def proxy(s3_server):
    with FaultProxy(s3_server.port) as p:
        yield p


@pytest.fixture
def proxied_store(proxy, tiny_config) -> Store:
    """The test's bucket and prefix, reached through the proxy."""
    s = tiny_config.storage
    return Store(StorageConfig(bucket=s.bucket, prefix=s.prefix, endpoint_url=proxy.endpoint, region=s.region))
