"""MLflow tracking shared by the steps: one parent run per pipeline run, one nested run per step.

Steps run in separate processes (or pods), so the parent run is found by its tag
`mixtune.pipeline_run` rather than passed around; steps run one after another, so find-or-create
is safe. Artifacts go to S3 under the experiment's artifact location.
"""
from __future__ import annotations

import contextlib
import os

import mlflow
from mlflow.tracking import MlflowClient

from components.common.config import MixtuneConfig
from components.common.storage import join

PIPELINE_TAG = "mixtune.pipeline_run"
MODEL_URI_TAG = "mixtune.model_uri"  # on model versions: the s3 prefix of the model files
ROLE_TAG = "mixtune.role"  # "pipeline" on the parent run, "step" on nested runs
# MLflow 3's UI opens an untyped experiment in its GenAI layout; this is a model-training project.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Step runs are named "<n>-<step>" so MLflow's runs table, sorted by name, lists them in pipeline order.
STEP_ORDER = {"ingest": 1, "templates": 2, "infer": 2, "shards": 3, "train": 4, "evaluate": 5, "register": 6,
              "deploy": 7}


def step_run_name(step: str) -> str:
    return f"{STEP_ORDER[step]}-{step}" if step in STEP_ORDER else step


def connect(cfg: MixtuneConfig) -> None:
    """Point MLflow (tracking, registry, its S3 artifact downloads) at the configured servers; creates nothing."""
    mlflow.set_tracking_uri(cfg.tracking.uri)
    if cfg.storage.endpoint_url:
        # MLflow's S3 artifact repository reads the endpoint from this variable.
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = cfg.storage.endpoint_url


def setup(cfg: MixtuneConfig) -> str:
    """Point MLflow at the configured server and return the experiment id (created on first use)."""
    connect(cfg)
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        if exp.tags.get("mlflow.experimentKind") is None:  # made by an older mixtune or by hand
            client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return exp.experiment_id
    location = cfg.tracking.artifact_location
    if location is None and not cfg.tracking.uri.startswith(("http://", "https://")):
        location = join(f"s3://{cfg.storage.bucket}", cfg.storage.prefix, "mlflow-artifacts")
    try:  # location None: the server's default, which a proxied server serves through itself
        return client.create_experiment(cfg.tracking.experiment, artifact_location=location, tags=EXPERIMENT_KIND)
    except mlflow.exceptions.MlflowException:
        # Created by a concurrent run between our lookup and create.
        return client.get_experiment_by_name(cfg.tracking.experiment).experiment_id


def parent_run_id(cfg: MixtuneConfig, pipeline_run: str) -> str:
    """The parent run of this pipeline run, created on first use."""
    if "'" in pipeline_run or "\\" in pipeline_run:  # it goes inside a quoted MLflow filter string
        raise ValueError(f"pipeline run name {pipeline_run!r} must not contain quotes or backslashes")
    exp_id = setup(cfg)
    client = MlflowClient()
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{pipeline_run}' and tags.`{ROLE_TAG}` = 'pipeline'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=pipeline_run, tags={
        PIPELINE_TAG: pipeline_run, ROLE_TAG: "pipeline", "mlflow.source.name": "mixtune pipeline",
        "mlflow.source.type": "JOB"})
    return run.info.run_id


@contextlib.contextmanager
def step_run(cfg: MixtuneConfig, pipeline_run: str, step: str):
    """Active MLflow run for one step, nested under the pipeline's parent run."""
    parent = parent_run_id(cfg, pipeline_run)
    exp_id = setup(cfg)
    with mlflow.start_run(
        experiment_id=exp_id,
        run_name=step_run_name(step),
        parent_run_id=parent,
        # The source MLflow would record is kfp's executor_main.py: say which step ran instead.
        tags={PIPELINE_TAG: pipeline_run, ROLE_TAG: "step", "mixtune.step": step,
              "mlflow.source.name": f"components.{step}", "mlflow.source.type": "JOB"},
    ) as run:
        try:
            yield run
        except BaseException:
            # On a cluster nothing else ends the parent run: a failed step marks it FAILED (a retry
            # that gets through, and the last step, mark it FINISHED again).
            try:
                MlflowClient().set_terminated(parent, status="FAILED")
            except mlflow.exceptions.MlflowException:
                pass  # MLflow itself is down: the step's own error is the one to show
            raise


def finish_parent(cfg: MixtuneConfig, pipeline_run: str, status: str = "FINISHED") -> str:
    run_id = parent_run_id(cfg, pipeline_run)
    MlflowClient().set_terminated(run_id, status=status)
    return run_id
