"""Register core: a model version in the MLflow Model Registry, alias `challenger` always, alias
`champion` only when the gate (components/common/gate.py) passes against the champion the candidate
was evaluated with.

The gate reads every number from one metrics.json (one evaluation set, one process), so they are
comparable. If the champion alias moved after evaluation, the comparison is stale: no promotion.
The champion alias moves last, after the version and all its tags are written, so a failure part-way
leaves the old champion in place. The version source is the model's s3:// prefix; MLflow 3.17 accepts
it and `models:/<name>@champion` downloads from it. Before the version is created, the prefix is made an
MLflow model (components/common/mlflow_model.py): `mlflow.pyfunc.load_model` and `mlflow models serve`
load every version.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.common.config import MixtuneConfig
from components.common.gate import Decision, decide
from components.common.lineage import REPLAY_FROM_TAG, TEMPLATES_URI_TAG
from components.common.mlflow_model import PACKAGED_TAG, model_spec, write_mlflow_model
from components.common.pipeline_run import log_headline
from components.common.registry import CHALLENGER, CHAMPION, EVAL_URI_TAG, REPLACED_TAG, alias_version, git_commit
from components.common.storage import Store, join, require_complete
from components.common.tracking import MODEL_URI_TAG, PIPELINE_TAG, finish_parent, step_run
from components.register.describe import version_description

REGISTERED_TAG = "mixtune.registered"  # "complete" once every alias this step moves has moved


class RegistryUnavailableError(RuntimeError):
    """MLflow could not be reached while registering."""


@dataclass
class RegisterResult:
    model_name: str
    version: str
    aliases: list[str]
    promoted: bool
    reason: str
    previous_champion: str | None
    mlflow_run_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name, description="mixtune summarizer, trained by the mixtune pipeline")
        except MlflowException as e2:  # created concurrently
            if e2.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def dataset_versions(client: MlflowClient, train_run_id: str, metrics: dict) -> str:
    """Every dataset version the model was trained on (replay included), from the train step's run."""
    if train_run_id:
        try:
            tagged = client.get_run(train_run_id).data.tags.get("mixtune.dataset_versions")
        except MlflowException:
            tagged = None
        if tagged:
            return tagged
    return str(metrics.get("dataset_version"))


def gate_tags(decision: Decision) -> dict[str, str]:
    """The verdict as tags to filter on; its checks are in the version's description (register/describe.py)."""
    return {"mixtune.gate": "promote" if decision.promote else "keep", "mixtune.gate_reason": decision.reason[:4900]}


def lineage_tags(store: Store, metrics: dict) -> dict[str, str]:
    """What the version was trained on (components/common/lineage.py): a retrain with replay.from finds it here."""
    examples_uri = metrics.get("examples_uri")
    if not examples_uri:  # evaluated before lineage was recorded
        return {}
    try:
        replay = store.get_json(join(examples_uri, "manifest.json")).get("replay") or {}
    except FileNotFoundError:
        replay = {}
    return {TEMPLATES_URI_TAG: examples_uri, REPLAY_FROM_TAG: str(replay.get("version") or "none"),
            "mixtune.replay_uri": str(replay.get("uri") or "none")}


def version_tags(metrics: dict, pipeline_run: str, train_run_id: str, decision: Decision, eval_uri: str,
                 versions: str, lineage: dict[str, str]) -> dict:
    tags = {
        PIPELINE_TAG: pipeline_run,
        "mixtune.train_run_id": train_run_id,
        "mixtune.git_commit": git_commit(),
        "mixtune.dataset_version": str(metrics.get("dataset_version")),
        # Only when it trained on more than this run's version (replay): otherwise it repeats the line above.
        **({"mixtune.dataset_versions": versions} if versions != str(metrics.get("dataset_version")) else {}),
        "mixtune.eval_set_sha256": str(metrics.get("eval_set_sha256")),
        EVAL_URI_TAG: eval_uri,
        MODEL_URI_TAG: str(metrics["model_uri"]),
        "mixtune.primary": f"{metrics['primary_task']}/{metrics['primary_metric']}",
        **lineage,
        **gate_tags(decision),
    }
    # The primary metric only, to sort and filter versions by; every score and source is in the
    # description and in evaluate's metrics.json.
    for task, t in metrics["tasks"].items():
        for role, scores in t["scores"].items():
            if (scores or {}).get(t["primary"]) is not None:
                tags[f"metric.{task}.{role}_{t['primary']}"] = f"{scores[t['primary']]:.6f}"
        for other, d in t["delta"].items():
            if d is not None:
                tags[f"metric.{task}.delta_{other}_{t['primary']}"] = f"{d['mean']:.6f} [{d['low']:.6f}, {d['high']:.6f}]"
    return tags


def existing_version(client: MlflowClient, name: str, model_uri: str):
    """The version already registered for this model: by a previous attempt of this step (a retry),
    or by an earlier pipeline run whose trained model this run reused (components/common/reuse.py)."""
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.source == model_uri:
            return mv
    return None


def unchanged(client: MlflowClient, name: str, mv, previous: str | None, register_run: str) -> RegisterResult:
    """An earlier run registered this very model and finished: register nothing, move no alias."""
    version = str(mv.version)
    reason = (f"nothing new: this model is already v{version}, registered by pipeline run "
              f"{mv.tags.get(PIPELINE_TAG)} (this run reused its trained model)")
    aliases = [a for a, v in ((CHALLENGER, alias_version(client, name, CHALLENGER)), (CHAMPION, previous))
               if v == version]
    mlflow.log_params({"model_name": name, "version": version, "model_uri": mv.source, "previous_champion": previous})
    mlflow.log_metrics({"promoted": 0.0})
    mlflow.set_tags({"mixtune.gate_reason": reason, "mixtune.model_version": version, "mixtune.reused": "true"})
    return RegisterResult(name, version, aliases, False, reason, previous, register_run, dict(mv.tags))


def run_register(
    cfg: MixtuneConfig, model_uri: str, eval_uri: str, train_run_id: str, pipeline_run: str
) -> RegisterResult:
    store = Store(cfg.storage)
    require_complete(store, model_uri)
    metrics = store.get_json(join(eval_uri, "metrics.json"))
    if metrics.get("model_uri") != model_uri:
        raise ValueError(f"{eval_uri}/metrics.json evaluated {metrics.get('model_uri')!r}, not {model_uri!r}")
    if metrics.get("schema") != 2:
        raise ValueError(f"{eval_uri}/metrics.json is schema {metrics.get('schema')!r}, register reads schema 2: "
                         "re-run evaluate with this version of mixtune")

    try:
        with step_run(cfg, pipeline_run, "register") as run:
            result = _register(cfg, store, metrics, model_uri, eval_uri, train_run_id, pipeline_run, run.info.run_id)
        log_headline(cfg, pipeline_run, metrics, result.promoted, result.version)
        finish_parent(cfg, pipeline_run)  # the last step: on a cluster nothing else ends the pipeline's run
    except MlflowException as e:
        if "API request to" not in str(e):  # not a transport failure: MLflow's own message is clear
            raise
        raise RegistryUnavailableError(
            f"register: the MLflow server at {cfg.tracking.uri} (tracking.uri) did not answer after retries, "
            f"so {model_uri} may be registered without its aliases (the champion alias moves last: it points "
            f"either at the old champion or at this version with every check done). "
            f"Rerun this step when MLflow is back: it completes the same version, never a second one. "
            f"Cause: {str(e)[:300]}") from e
    return result


def _register(cfg: MixtuneConfig, store: Store, metrics: dict, model_uri: str, eval_uri: str, train_run_id: str,
              pipeline_run: str, register_run: str) -> RegisterResult:
    name = cfg.registry.model_name
    client = MlflowClient()
    ensure_registered_model(client, name)
    previous = alias_version(client, name, CHAMPION)
    retry = existing_version(client, name, model_uri)
    if (retry is not None and retry.tags.get(REGISTERED_TAG) == "complete"
            and retry.tags.get(PIPELINE_TAG) != pipeline_run):
        return unchanged(client, name, retry, previous, register_run)
    if retry is not None and previous == str(retry.version):
        decision = Decision(True, "already champion (retry of this step)")
    else:
        decision = decide(cfg.registry.gate, metrics, previous)
    tags = version_tags(metrics, pipeline_run, train_run_id, decision, eval_uri,
                        dataset_versions(client, train_run_id, metrics), lineage_tags(store, metrics))
    # Before the version exists: every version is an MLflow model (pyfunc.load_model, models serve).
    write_mlflow_model(store, model_uri, model_spec(cfg))
    tags[PACKAGED_TAG] = "pyfunc"
    if retry is None:
        mv = client.create_model_version(name, source=model_uri, run_id=train_run_id or None, tags=tags,
                                         description=version_description(decision, metrics, pipeline_run))
    else:
        mv = retry
        for k, v in tags.items():
            client.set_model_version_tag(name, mv.version, k, v)
        client.update_model_version(name, mv.version, description=version_description(decision, metrics, pipeline_run))
    version = str(mv.version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.promote and alias_version(client, name, CHAMPION) != previous:
        # Moved between our read and now: the gate's comparison no longer holds.
        decision = Decision(False, f"keep: champion alias moved during registration (was v{previous})")
        tags.update(gate_tags(decision))
        for k, v in gate_tags(decision).items():
            client.set_model_version_tag(name, version, k, v)
        client.update_model_version(name, version, description=version_description(decision, metrics, pipeline_run))
    if decision.promote and previous != version:
        client.set_model_version_tag(name, version, REPLACED_TAG, previous or "none")
        client.set_registered_model_alias(name, CHAMPION, version)  # last: all checks are done
    aliases = [CHALLENGER] + ([CHAMPION] if alias_version(client, name, CHAMPION) == version else [])
    client.set_model_version_tag(name, version, REGISTERED_TAG, "complete")  # a rerun now changes nothing

    gate = cfg.registry.gate
    mlflow.log_params({"model_name": name, "version": version, "primary": tags["mixtune.primary"],
                       "min_improvement": gate.min_improvement, "max_drop": gate.max_drop,
                       "model_uri": model_uri, "eval_uri": eval_uri, "previous_champion": previous})
    mlflow.log_metrics({"promoted": float(decision.promote)})
    mlflow.set_tags({"mixtune.gate_reason": decision.reason[:4900], "mixtune.model_version": version})
    return RegisterResult(name, version, aliases, decision.promote, decision.reason, previous, register_run, tags)
