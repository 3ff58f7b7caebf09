"""Content-keyed reuse of a finished step's outputs across pipeline runs.

Why not KFP's cache alone: its key is every input parameter of a task, and each mixtune step
receives its pipeline run's id (MLflow nests the step under that run; artifacts go under
`runs/<id>/`), so two runs never share a key. A step whose work is expensive therefore keys it on
what it actually reads: the content digests of its inputs, its config section and the code that
computes it. The first run to finish publishes `<root>/reuse/<step>/<key>.json` (a conditional put,
so concurrent runs never overwrite each other); that index points at the publishing run's artifacts,
which are never copied or rewritten. A later run with the same key reads them if they are still
complete, else it does the work itself.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from components.common.storage import Store, join

PACKAGE = Path(__file__).resolve().parents[1]  # components/: the code whose output is reused


def code_digest() -> str:
    """sha256 over every source file of the components package: any code change is a new key,
    committed or not (a git commit would miss uncommitted edits and differs in every image)."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix in (".py", ".yaml", ".json") and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def content_key(step: str, **parts) -> str:
    """A stable key: sha256 of the step's name, the code digest and the parts as canonical JSON."""
    body = json.dumps({"step": step, "code": code_digest(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def index_uri(store: Store, step: str, key: str) -> str:
    return join(store.root, "reuse", step, f"{key}.json")


def lookup(store: Store, step: str, key: str, still_valid: Callable[[dict], bool]) -> dict | None:
    """The outputs an earlier run published under this key, if `still_valid` confirms they are
    still complete in S3 (a retention policy may have deleted them); None means do the work."""
    uri = index_uri(store, step, key)
    if not store.exists(uri):
        return None
    entry = store.get_json(uri)
    if entry.get("key") != key or not still_valid(entry["outputs"]):
        store.delete(uri)  # stale: this run does the work and publishes its own outputs
        return None
    return entry


def publish(store: Store, step: str, key: str, outputs: dict, pipeline_run: str) -> bool:
    """Record this run's finished outputs under the key. The first writer wins (If-None-Match), so
    of two runs finishing the same work at once, one entry stands. Returns whether this run's did."""
    uri = index_uri(store, step, key)
    entry = json.dumps({"key": key, "step": step, "pipeline_run": pipeline_run, "outputs": outputs},
                       indent=2, sort_keys=True).encode()
    return store.put_if_absent(uri, entry)
