"""`mixtune submit`: start the pipeline on a Kubeflow Pipelines cluster, once per batch of new chat logs.

Three ways in, one code path:
- by hand: `mixtune submit --config cfg.yaml` starts one run;
- from the Argo Events sensor (infra/base/triggers): `mixtune submit --if-new-data` waits until the
  source listing is quiet (a burst of uploads is one batch), fingerprints it (every object's key, size
  and ETag), and claims `<storage root>/<trigger.claims_prefix>/<fingerprint>.json` with a conditional
  put (S3 `If-None-Match: *`). Two events for the same files race for one key and only one wins, so
  they start one run, not two; a listing nobody has claimed yet is new data. The batch and its claim
  are pipelines/trigger.py, shared with `mixtune watch`;
- `mixtune submit --schedule` creates a KFP recurring run (cron) of the scheduled pipeline variant.

The compiled pipeline carries the config (no secrets: credentials come from Secrets by reference and
from the runner's service account, see pipelines/dag.py).
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from components.common.config import MixtuneConfig
from components.common.storage import Store, run_root
from pipelines.dag import compile_pipeline
from pipelines.trigger import (TriggerError, batch_config, candidate_batch, claim, held_claim, release,
                               run_name_for, update_claim)

SCHEDULE_NAME = "mixtune-retrain"

SubmitError = TriggerError  # one error for both trigger paths: the CLI prints its message


@dataclass
class Submission:
    started: bool
    reason: str
    run_name: str | None = None
    run_id: str | None = None
    fingerprint: str | None = None
    claim_uri: str | None = None
    files: int = 0


# -- KFP -----------------------------------------------------------------------------------------


def kfp_client(cfg: MixtuneConfig):
    """kfp.Client for cluster.kfp_host. In a pod of a multi-user install it authenticates with the
    projected service-account token at KF_PIPELINES_SA_TOKEN_PATH (the trigger Job mounts one)."""
    import kfp

    return kfp.Client(host=cfg.cluster.kfp_host, namespace=cfg.cluster.namespace)


@contextlib.contextmanager
def kfp_errors(cfg: MixtuneConfig):
    """A KFP API that is down or refuses us is one line naming the host, not a urllib3 traceback."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as e:
        raise SubmitError(f"KFP API at {cfg.cluster.kfp_host} refused the request: HTTP {e.status} {e.reason}: "
                          f"{(e.body or '')[:300]}") from None
    except (HTTPError, OSError) as e:
        raise SubmitError(f"cannot reach the KFP API at {cfg.cluster.kfp_host} (cluster.kfp_host): "
                          f"{getattr(e, 'reason', e)}") from None


def _experiment_id(cfg: MixtuneConfig, client) -> str:
    # kfp.Client.create_experiment returns the existing experiment of that name when there is one.
    return client.create_experiment(cfg.cluster.experiment, namespace=cfg.cluster.namespace).experiment_id


def start_run(cfg: MixtuneConfig, client, run_name: str) -> str:
    """Compile the DAG and start one run; returns KFP's run id."""
    run_root(cfg.storage, run_name)  # a name that cannot name the run's folder fails here, not in a step
    with tempfile.TemporaryDirectory() as tmp, kfp_errors(cfg):
        package = compile_pipeline(cfg, str(Path(tmp) / "mixtune.yaml"))
        result = client.create_run_from_pipeline_package(
            package, arguments={"config_json": cfg.model_dump_json(), "pipeline_run": run_name},
            run_name=run_name, experiment_id=_experiment_id(cfg, client),
            service_account=cfg.cluster.service_account)
    return result.run_id


def kfp_cron(expression: str) -> str:
    """KFP's scheduler reads cron with a seconds field first; a 5-field expression gets second 0."""
    fields = expression.split()
    return " ".join(["0", *fields]) if len(fields) == 5 else expression


def schedule(cfg: MixtuneConfig, client=None, name: str = SCHEDULE_NAME, replace: bool = False) -> Submission:
    """Create the recurring run (one per name: an existing one is kept unless replace)."""
    client = client if client is not None else kfp_client(cfg)
    with kfp_errors(cfg):
        experiment_id = _experiment_id(cfg, client)
        listed = client.list_recurring_runs(experiment_id=experiment_id, page_size=100).recurring_runs
    existing = [r for r in listed or [] if r.display_name == name]
    if existing and not replace:
        return Submission(False, f"recurring run {name!r} already exists ({existing[0].recurring_run_id}); "
                          f"--replace to recreate it", run_name=name, run_id=existing[0].recurring_run_id)
    with tempfile.TemporaryDirectory() as tmp, kfp_errors(cfg):
        for r in existing:
            client.delete_recurring_run(r.recurring_run_id)
        package = compile_pipeline(cfg, str(Path(tmp) / "mixtune-scheduled.yaml"), scheduled=True)
        created = client.create_recurring_run(
            experiment_id, name, description=f"mixtune retraining, cron {cfg.cluster.schedule!r}",
            cron_expression=kfp_cron(cfg.cluster.schedule), max_concurrency=1, no_catchup=True,
            params={"config_json": cfg.model_dump_json()}, pipeline_package_path=package,
            service_account=cfg.cluster.service_account)
    return Submission(True, f"recurring run {name!r}: {cfg.cluster.schedule}", run_name=name,
                      run_id=created.recurring_run_id)


# -- entry points --------------------------------------------------------------------------------


def submit(cfg: MixtuneConfig, client=None, run_name: str | None = None) -> Submission:
    client = client if client is not None else kfp_client(cfg)
    name = run_name or run_name_for(None)
    return Submission(True, "submitted", run_name=name, run_id=start_run(cfg, client, name))


def submit_if_new(cfg: MixtuneConfig, client=None, store: Store | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> Submission:
    """Start a run for the current batch of the watched sources unless one was already started for it."""
    store = store or Store(cfg.storage)
    batch = candidate_batch(cfg, store, sleep)
    if batch is None:
        return Submission(False, "no file in the watched sources that an earlier run has not claimed; nothing to do")
    n = len(batch.files)
    if not claim(store, batch, {"runner": "mixtune submit"}):
        held = held_claim(store, batch)
        reason = (f"already submitted for these {n} files"
                  f"{' as ' + held['run_name'] if held.get('run_name') else ''}; nothing to do" if held
                  else f"another event claimed some of these {n} files first; nothing to do")
        return Submission(False, reason, run_name=held.get("run_name"), run_id=held.get("run_id"),
                          fingerprint=batch.fingerprint, claim_uri=batch.claim_uri, files=n)
    name = run_name_for(batch.fingerprint)
    try:
        client = client if client is not None else kfp_client(cfg)
        run_id = start_run(batch_config(cfg, batch), client, name)
    except Exception:
        release(store, batch)  # the next event (or a retry of this Job) must be able to try again
        raise
    update_claim(store, batch, {"run_name": name, "run_id": run_id, "status": "SUBMITTED"})
    return Submission(True, f"submitted for {n} files", run_name=name, run_id=run_id,
                      fingerprint=batch.fingerprint, claim_uri=batch.claim_uri, files=n)
