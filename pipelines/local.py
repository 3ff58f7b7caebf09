"""Run the DAG on one machine: kfp.local's SubprocessRunner, the embedded S3 server, SQLite MLflow.

Everything lives under one work folder (default .mixtune/): S3 data, the MLflow database, and
kfp.local's outputs. S3 data and the registry persist across runs, so a second run competes with
the first run's champion.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import time
from contextlib import ExitStack
from pathlib import Path

from mlflow.tracking import MlflowClient

from components.common import tracking
from components.common.config import MixtuneConfig
from components.common.storage import Store, join, run_root
from pipelines.embedded import LocalS3
from pipelines.sample_data import broken_rows, generate, write_jsonl


@contextlib.contextmanager
def patched_environ(values: dict[str, str]):
    """Set variables for the duration of a run, then restore what was there.

    boto3's default session caches the first credentials it resolves, and libraries (MLflow's S3
    artifact store among them) use it: drop it whenever the keys change."""
    import boto3

    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    boto3.DEFAULT_SESSION = None
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        boto3.DEFAULT_SESSION = None


def new_run_name() -> str:
    return time.strftime("mixtune-%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def localize(cfg: MixtuneConfig, workdir: Path, endpoint: str | None) -> MixtuneConfig:
    """Point storage at the embedded server and make the SQLite path absolute (steps run elsewhere)."""
    update: dict = {}
    if endpoint:
        update["storage"] = cfg.storage.model_copy(update={"endpoint_url": endpoint})
    uri = cfg.tracking.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        db = (Path.cwd() / uri[len("sqlite:///"):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        update["tracking"] = cfg.tracking.model_copy(update={"uri": f"sqlite:///{db}"})
    return cfg.model_copy(update=update)


def stage_sample(cfg: MixtuneConfig, store: Store, workdir: Path) -> MixtuneConfig:
    """Replace a `sample` source by generated chat logs uploaded to S3, as a team's export would be."""
    sources = []
    for src in cfg.data.sources:
        if src.path == "sample":
            s = cfg.data.sample
            path = write_jsonl(generate(s.conversations, s.seed), workdir / "sample" / f"chatlogs-{s.seed}.jsonl",
                               broken=broken_rows(s.broken_rows, s.seed))
            uri = join(store.root, "incoming", "sample", path.name)
            store.put_file(uri, path)
            src = src.model_copy(update={"path": uri, "format": "chatlog", "name": src.name or "sample"})
        sources.append(src)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": sources})})


@contextlib.contextmanager
def local_services(cfg: MixtuneConfig, workdir: str | Path = ".mixtune", embedded_s3: bool = True):
    """The embedded S3 server (unless external) and the config pointed at it, for as long as the block runs."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        endpoint = None
        if embedded_s3:
            s3 = stack.enter_context(LocalS3(workdir / "s3"))
            stack.enter_context(patched_environ(s3.env()))  # inherited by every step's subprocess
            endpoint = s3.endpoint
        cfg = localize(cfg, workdir, endpoint)
        Store(cfg.storage).ensure_bucket()
        yield cfg


class StepFailed(RuntimeError):
    """A step of a local run failed: which one, its log file and its last lines."""

    def __init__(self, step: str, log: str, tail: list[str], verbose: bool, error: str | None = None):
        shown = "" if verbose else "\n" + "\n".join(f"  | {line}" for line in tail)
        super().__init__(f"step {step} failed" + (f": {error}" if error else "") + f"{shown}\nits whole log: {log}")
        self.step, self.log, self.tail = step, log, tail


def run_dag_locally(cfg: MixtuneConfig, workdir: str | Path, embedded_s3: bool, pipeline_run: str,
                    build, collect, pipeline_name: str, verbose: bool = True) -> dict:
    """Run a pipeline built by `build(cfg)` through kfp.local inside the local services, with its MLflow
    parent run, and return `collect(cfg, store, artifact_root, pipeline_run)` plus timing.

    Every step's output goes to `<workdir>/logs/<pipeline_run>/`; without `verbose` the console shows
    one line per step and the training progress (pipelines/console.py)."""
    import kfp.local

    from pipelines.console import routed_output

    workdir = Path(workdir).resolve()
    with local_services(cfg, workdir, embedded_s3) as cfg:
        store = Store(cfg.storage)
        cfg = stage_sample(cfg, store, workdir)
        artifact_root = run_root(cfg.storage, pipeline_run)
        # Logged through the client: entering and leaving the run would mark it FINISHED early.
        parent = tracking.parent_run_id(cfg, pipeline_run)
        client = MlflowClient()
        client.log_dict(parent, cfg.model_dump(mode="json"), "config.json")
        client.set_tag(parent, "mixtune.artifact_root", artifact_root)
        client.set_tag(parent, "mixtune.pipeline", pipeline_name)
        kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "kfp"))
        status = "FAILED"
        started = time.time()
        try:
            with routed_output(workdir / "logs" / pipeline_run, verbose=verbose) as steps:
                try:
                    build(cfg)(config_json=cfg.model_dump_json(), pipeline_run=pipeline_run, artifact_root=artifact_root)
                except RuntimeError as e:
                    failed = steps.failure()
                    if failed is None:
                        raise
                    raise StepFailed(failed["step"], failed["log"], failed["tail"], verbose, failed["error"]) from e
            status = "FINISHED"
        finally:
            tracking.finish_parent(cfg, pipeline_run, status)
        summary = collect(cfg, store, artifact_root, pipeline_run)
        summary["seconds"] = round(time.time() - started, 1)
        summary["workdir"] = str(workdir)
        return summary


def run_local(cfg: MixtuneConfig, workdir: str | Path = ".mixtune", embedded_s3: bool = True,
              pipeline_run: str | None = None, verbose: bool = True) -> dict:
    """Run the whole DAG locally and return the summary (see pipelines.summary)."""
    from pipelines.dag import PIPELINE_NAME, build_pipeline
    from pipelines.summary import collect_local_summary

    state = Path(workdir).resolve()
    return run_dag_locally(cfg, workdir, embedded_s3, pipeline_run or new_run_name(), build_pipeline,
                           lambda c, store, root, run: collect_local_summary(c, store, root, run, state),
                           PIPELINE_NAME, verbose=verbose)
