"""Two pipeline runs at once on one bucket, each through its own recording proxy: neither reads or
writes the other's artifacts, shared content-addressed objects are only ever created conditionally,
and every artifact's manifest or marker is the last object its step writes (write, then publish)."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from components.common.storage import join
from pipelines.local import stage_sample
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.slow
RUNS = ("concurrent-a", "concurrent-b")
# Shared areas a run may write outside its own root: immutable, content-addressed (conditional puts
# only); the ingest catalog, a cache whose entries are merged on save; MLflow's artifact store, whose
# keys are each MLflow run's own id.
SHARED_IMMUTABLE = ("datasets/", "ingest/parts/")
SHARED_OTHER = ("ingest/catalog/", "mlflow-artifacts/")


def _accesses(proxy: FaultProxy, bucket: str, prefix: str) -> list[tuple[str, str, bool]]:
    """(kind, key relative to the test's prefix, conditional) for every request, in arrival order;
    kind is "write" (PUT, DELETE, DeleteObjects) or "read" (GET, HEAD, a listing's prefix)."""
    out = []
    for method, path, conditional in proxy.requests:
        parts = urlsplit(path)
        key = unquote(parts.path).lstrip("/")
        key = key[len(bucket) + 1:] if key.startswith(bucket + "/") else ""
        query = parse_qs(parts.query, keep_blank_values=True)
        if not key and "prefix" in query:
            key = query["prefix"][0]
        if method in ("PUT", "DELETE"):
            out.append(("write", key, conditional))
        elif method in ("GET", "HEAD") or (method == "POST" and key):
            out.append(("read", key, False))
    return [(kind, key[len(prefix) + 1:], c) for kind, key, c in out if key.startswith(prefix + "/")]


def _run_both(cfg, store, tmp_path, proxies) -> tuple[list[dict], float]:
    """Start both runs' data steps, each in its own process through its own proxy; wait for both."""
    procs = []
    started = time.monotonic()
    for run, proxy in zip(RUNS, proxies):
        run_cfg = cfg.model_copy(update={
            "storage": cfg.storage.model_copy(update={"endpoint_url": proxy.endpoint}),
            "tracking": cfg.tracking.model_copy(update={"uri": f"sqlite:///{tmp_path}/{run}.db"})})
        (tmp_path / f"{run}.json").write_text(run_cfg.model_dump_json())
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.faults.run_data_steps", str(tmp_path / f"{run}.json"),
                                       run, join(store.root, "runs", run), str(tmp_path / f"{run}.out.json")]))
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], codes
    return [json.loads((tmp_path / f"{run}.out.json").read_text()) for run in RUNS], time.monotonic() - started


def test_two_runs_at_once_keep_to_their_own_artifacts(tiny_config, store, tmp_path, record):
    cfg = stage_sample(tiny_config, store, tmp_path)
    bucket, prefix = cfg.storage.bucket, cfg.storage.prefix
    port = int(cfg.storage.endpoint_url.rsplit(":", 1)[1])
    with contextlib.ExitStack() as stack:
        proxies = [stack.enter_context(FaultProxy(port)) for _ in RUNS]
        outputs, took = _run_both(cfg, store, tmp_path, proxies)

    problems = []
    for run, other, proxy in zip(RUNS, reversed(RUNS), proxies):
        access = _accesses(proxy, bucket, prefix)
        own, theirs = f"runs/{run}/", f"runs/{other}/"
        problems += [f"{run} {kind}s {key}" for kind, key, _ in access if key.startswith(theirs)]
        for kind, key, conditional in access:
            if kind != "write" or key.startswith(own) or key.startswith(SHARED_OTHER):
                continue
            if not key.startswith(SHARED_IMMUTABLE) or not conditional:
                problems.append(f"{run} writes {key} outside its root{'' if conditional else ' unconditionally'}")
        # Write, then publish: nothing under an artifact's prefix is written after its marker.
        writes = [key for kind, key, _ in access if kind == "write"]
        for step, marker in (("ingest", "report.json"), ("templates", "manifest.json"), ("shards", "manifest.json")):
            under = [i for i, key in enumerate(writes) if key.startswith(f"{own}{step}/")]
            published = [i for i in under if writes[i] == f"{own}{step}/{marker}"]
            if not published or max(under) != published[-1]:
                problems.append(f"{run}: {step}/{marker} is not the last object the step writes")
    same = (outputs[0]["dataset_version"] == outputs[1]["dataset_version"] and outputs[0]["shards"] == outputs[1]["shards"])
    requests = [len(p.requests) for p in proxies]
    record("two pipeline runs at once, one bucket", "own artifacts only; shared ones created once",
           f"{sum(requests)} requests in {took:.0f} s, {len(problems)} crossings, same shards: {same}",
           not problems and same)
    assert not problems, problems[:10]
