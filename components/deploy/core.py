"""Deploy core: the champion's InferenceService follows the champion alias.

deploy_champion() is the DAG step, run after register only when the champion moved: it rolls the
InferenceService to the new champion (components/deploy/rollout.py: canary, Ready, smoke request, all
traffic). If the new version does not come up in time, the object goes back to the champion it replaced
and so does the `champion` alias, so the registry keeps naming what is served; the version gets a
`mixtune.deploy_failed` tag saying why, and the step fails with that reason.

redeploy() rolls the InferenceService to any version the same way; `mixtune rollback` calls it after it
has moved the alias. On failure it puts the object back to what it served before and leaves the alias
to its caller.
"""
from __future__ import annotations

import getpass
import json
import time

import mlflow
from mlflow.tracking import MlflowClient

from components.common import tracking
from components.common.config import MixtuneConfig
from components.common.registry import CHAMPION, REPLACED_TAG, alias_version, resolve
from components.common.storage import IncompleteModelError, Store, require_complete
from components.common.tracking import finish_parent, step_run
from components.deploy import manifest as m
from components.deploy.rollout import DeployError, DeployResult, Io, api_error, default_api, restore, rollout

FAILED_TAG = "mixtune.deploy_failed"  # on a version that did not come up: why
AUDIT_TAG = "mixtune.last_alias_change"  # on the registered model, as `mixtune promote/rollback` write it


def target(cfg: MixtuneConfig, version: str) -> m.Target:
    """A version number (or alias) -> its immutable S3 prefix, which must hold a complete model."""
    name = cfg.registry.model_name
    ref = resolve(name, str(version), fetch=False)
    if ref is None:
        raise DeployError(f"{name} has no alias {version!r}: nothing to deploy")
    if not ref.uri.startswith("s3://"):
        raise DeployError(f"{name} v{ref.version}: its files are at {ref.uri}, not an s3:// prefix; KServe's "
                          "storage initializer downloads a version from its S3 prefix")
    require_complete(Store(cfg.storage), ref.uri)  # never point serving at a model whose files are gone
    return m.Target(name, ref.version, ref.uri)


def _fallback(cfg: MixtuneConfig, version: str | None) -> tuple[m.Target | None, str]:
    """The version to go back to on failure, if it can still be served (and why not)."""
    if not version or not version.isdigit():
        return None, ""
    try:
        return target(cfg, version), ""
    except (DeployError, IncompleteModelError, ValueError) as e:
        return None, f"v{version} cannot be served either ({e}); "


def _alias_back(client: MlflowClient, name: str, version: str, replaced: str | None, reason: str) -> str:
    now = alias_version(client, name, CHAMPION)
    if now != version:
        return f"the champion alias names v{now} now: left as it is"
    if replaced and replaced != "none":
        client.set_registered_model_alias(name, CHAMPION, replaced)
        outcome = f"the champion alias is back on v{replaced}"
    else:
        client.delete_registered_model_alias(name, CHAMPION)
        outcome = f"v{version} was the first champion: the champion alias is removed"
    client.set_registered_model_tag(name, AUDIT_TAG, json.dumps({
        "action": "deploy-failed", "from": version, "to": replaced, "reason": reason[:2000], "forced": False,
        "by": getpass.getuser(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})[:4900])
    return outcome


def deploy_champion(cfg: MixtuneConfig, version: str, pipeline_run: str, io: Io | None = None) -> DeployResult:
    """The deploy step: serve `version` (the champion register just promoted), or undo and fail."""
    io = io or Io()
    with step_run(cfg, pipeline_run, "deploy"):
        result = _deploy_champion(cfg, str(version), io)
        mlflow.log_params({"model_name": result.model_name, "version": result.version, "model_uri": result.model_uri,
                           "mode": cfg.serve.kubernetes.mode, "replaced": result.replaced})
        mlflow.log_metrics({"deployed": 0.0 if result.skipped else 1.0, "ready_seconds": result.ready_seconds})
        mlflow.set_tags({"mixtune.deployed_revision": result.revision, "mixtune.deploy_skipped": result.skipped})
    finish_parent(cfg, pipeline_run)  # the last step now: nothing else ends the pipeline's run
    return result


def _deploy_champion(cfg: MixtuneConfig, version: str, io: Io) -> DeployResult:
    client, name = MlflowClient(), cfg.registry.model_name
    new = target(cfg, version)
    current = alias_version(client, name, CHAMPION)
    if current != new.version:  # a later run promoted another version, or someone rolled back
        io.log(f"deploy: the champion is v{current} now, not v{new.version}: nothing to deploy")
        return DeployResult(name, new.version, new.model_uri,
                            skipped=f"the champion is v{current}, not v{new.version}")
    replaced = client.get_model_version(name, new.version).tags.get(REPLACED_TAG)
    previous, why_not = _fallback(cfg, replaced)
    try:
        result = rollout(cfg, new, io)
    except DeployError as failure:
        undone = restore(cfg, previous, io) if failure.touched else "the InferenceService was not changed"
        alias = _alias_back(client, name, new.version, replaced, str(failure))
        client.set_model_version_tag(name, new.version, FAILED_TAG, str(failure)[:4900])
        raise DeployError(f"deploy of {name} v{new.version} failed: {failure}. {why_not}{undone}; {alias}",
                          failure.touched) from failure
    result.replaced = replaced
    return result


def redeploy(cfg: MixtuneConfig, version: str, io: Io | None = None) -> DeployResult:
    """Serve `version` (for `mixtune rollback`: the champion it rolled back to) the way the step does.
    On failure the InferenceService goes back to the version it served before; the alias is not touched."""
    io = io or Io()
    tracking.setup(cfg)
    k, name = cfg.serve.kubernetes, cfg.registry.model_name
    new = target(cfg, version)
    io.api = io.api if io.api is not None else default_api()
    try:
        live = io.api.get_namespaced_custom_object(m.GROUP, m.API_VERSION, k.namespace, m.PLURAL, k.name)
    except Exception as e:
        if getattr(e, "status", None) != 404:
            raise DeployError(f"cannot read InferenceService {k.namespace}/{k.name}: {api_error(e)}") from e
        live = None
    before = m.served_version(live) if live else None
    previous, why_not = _fallback(cfg, before if before != new.version else None)
    try:
        result = rollout(cfg, new, io)
    except DeployError as failure:
        undone = restore(cfg, previous, io) if failure.touched else "the InferenceService was not changed"
        champion = alias_version(MlflowClient(), name, CHAMPION)
        raise DeployError(f"redeploy of {name} v{new.version} failed: {failure}. {why_not}{undone}; the champion "
                          f"alias was not changed (it names v{champion})", failure.touched) from failure
    result.replaced = before
    return result
