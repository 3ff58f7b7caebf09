"""Register core: a model version in the MLflow Model Registry, alias `challenger` always, alias
`champion` only when the candidate beats the champion it was evaluated against.

The gate reads both numbers from one metrics.json (one evaluation set, one process), so they are
comparable. If the champion alias moved after evaluation, the comparison is stale: no promotion.
The version source is the model's s3:// prefix; MLflow 3.17 accepts it and `models:/<name>@champion`
downloads from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.common.config import MixtuneConfig
from components.common.storage import Store, join, require_complete
from components.common.tracking import MODEL_URI_TAG, PIPELINE_TAG, step_run

CHAMPION, CHALLENGER = "champion", "challenger"



@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


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


def decide(
    metric: str, metrics: dict, current_champion: str | None, min_improvement: float
) -> Decision:
    """The promotion gate, a pure function of metrics.json and the champion alias right now."""
    candidate = (metrics.get("candidate") or {}).get(metric)
    if candidate is None:
        raise ValueError(f"metrics.json has no candidate {metric!r}: was it written by this evaluate step?")
    evaluated = metrics.get("champion_version")
    if current_champion is None:
        if evaluated is None:
            return Decision(True, "no champion yet: the first model becomes champion")
        return Decision(True, f"no champion now (alias removed after evaluation against v{evaluated})")
    if str(current_champion) != str(evaluated):
        was = f"v{evaluated}" if evaluated is not None else "no champion"
        return Decision(False, f"champion changed since evaluation ({was} then, v{current_champion} now): "
                               "scores are not on the same footing; re-evaluate to promote")
    champion = (metrics.get("champion") or {}).get(metric)
    if champion is None:
        return Decision(False, f"metrics.json has no champion {metric!r} for v{evaluated}")
    if candidate > champion + min_improvement:
        return Decision(True, f"candidate {metric} {candidate:.4f} > champion v{evaluated} {champion:.4f}"
                              f" + min_improvement {min_improvement:g}")
    return Decision(False, f"candidate {metric} {candidate:.4f} does not beat champion v{evaluated} "
                           f"{champion:.4f} + min_improvement {min_improvement:g}")




def champion_version(client: MlflowClient, name: str) -> str | None:
    version = client.get_registered_model(name).aliases.get(CHAMPION)
    return None if version is None else str(version)


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


def version_tags(metrics: dict, pipeline_run: str, train_run_id: str, decision: Decision, register_run: str) -> dict:
    tags = {
        PIPELINE_TAG: pipeline_run,
        "mixtune.train_run_id": train_run_id,
        "mixtune.register_run_id": register_run,
        "mixtune.dataset_version": str(metrics.get("dataset_version")),
        "mixtune.eval_set_sha256": str(metrics.get("eval_set_sha256")),
        "mixtune.n_examples": str(metrics.get("n_examples")),
        MODEL_URI_TAG: str(metrics["model_uri"]),
        "mixtune.compared_to_version": str(metrics.get("champion_version") or "none"),
        "mixtune.gate": "promote" if decision.promote else "keep",
        "mixtune.gate_reason": decision.reason,
    }
    for role in ("candidate", "base", "champion"):
        for key, value in (metrics.get(role) or {}).items():
            tags[f"metric.{role}_{key}"] = f"{value:.6f}"
    return tags


def existing_version(client: MlflowClient, name: str, model_uri: str, pipeline_run: str):
    """The version a previous attempt of this same step created, so a retry does not duplicate it."""
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.source == model_uri and mv.tags.get(PIPELINE_TAG) == pipeline_run:
            return mv
    return None


def run_register(
    cfg: MixtuneConfig, model_uri: str, eval_uri: str, train_run_id: str, pipeline_run: str
) -> RegisterResult:
    store = Store(cfg.storage)
    require_complete(store, model_uri)
    metrics = store.get_json(join(eval_uri, "metrics.json"))
    if metrics.get("model_uri") != model_uri:
        raise ValueError(f"{eval_uri}/metrics.json evaluated {metrics.get('model_uri')!r}, not {model_uri!r}")
    name, metric = cfg.registry.model_name, cfg.registry.metric

    with step_run(cfg, pipeline_run, "register") as run:
        client = MlflowClient()
        ensure_registered_model(client, name)
        previous = champion_version(client, name)
        retry = existing_version(client, name, model_uri, pipeline_run)
        if retry is not None and previous == str(retry.version):
            decision = Decision(True, "already champion (retry of this step)")
        else:
            decision = decide(metric, metrics, previous, cfg.registry.min_improvement)
        tags = version_tags(metrics, pipeline_run, train_run_id, decision, run.info.run_id)
        if retry is None:
            mv = client.create_model_version(name, source=model_uri, run_id=train_run_id or None, tags=tags)
        else:
            mv = retry
            for k, v in tags.items():
                client.set_model_version_tag(name, mv.version, k, v)
        version = str(mv.version)
        client.set_registered_model_alias(name, CHALLENGER, version)
        if decision.promote and champion_version(client, name) != previous:
            # Moved between our read and now: the gate's comparison no longer holds.
            decision = Decision(False, f"champion alias moved during registration (was v{previous})")
            tags.update({"mixtune.gate": "keep", "mixtune.gate_reason": decision.reason})
            for k in ("mixtune.gate", "mixtune.gate_reason"):
                client.set_model_version_tag(name, version, k, tags[k])
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, version)
        aliases = [CHALLENGER] + ([CHAMPION] if champion_version(client, name) == version else [])

        mlflow.log_params({"model_name": name, "version": version, "metric": metric,
                           "min_improvement": cfg.registry.min_improvement, "model_uri": model_uri,
                           "eval_uri": eval_uri, "previous_champion": previous})
        mlflow.log_metrics({"promoted": float(decision.promote),
                            f"candidate_{metric}": metrics["candidate"][metric]})
        mlflow.set_tags({"mixtune.gate_reason": decision.reason, "mixtune.model_version": version})
    return RegisterResult(name, version, aliases, decision.promote, decision.reason, previous, run.info.run_id, tags)
