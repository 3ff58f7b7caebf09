"""The MLflow Model Registry as the steps and the CLI use it: resolve an alias or version to the model's
files, and the tag names every version carries.

A version's source is the model's s3:// prefix (tag `mixtune.model_uri`), so resolving it needs no
download; a version registered some other way (a runs:/ source) is fetched through MLflow.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.common.config import MODELS_SCHEME, parse_models_uri
from components.common.tracking import MODEL_URI_TAG

CHAMPION, CHALLENGER = "champion", "challenger"
# On a version: the champion it replaced when it was promoted; `mixtune rollback` walks this chain.
REPLACED_TAG = "mixtune.replaced_champion"
EVAL_URI_TAG = "mixtune.eval_uri"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    uri: str  # an s3 prefix, or a local directory downloaded from the registry
    tags: dict


def registered(client: MlflowClient, name: str):
    """The registered model, or None before its first version."""
    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    model = registered(client, name)
    version = None if model is None else model.aliases.get(alias)
    return None if version is None else str(version)


def resolve(name: str, alias_or_version: str, download_to: Path | None = None,
            fetch: bool = True) -> ModelRef | None:
    """`champion`, `challenger` or `7` -> the version and where its files are; None if the alias is unset.
    A version whose files are not an s3:// prefix is downloaded to <download_to>/<version>, or with
    fetch=False named by its immutable models:/<name>/<version> (fetched where it is loaded)."""
    client = MlflowClient()
    if alias_or_version.isdigit():
        version = alias_or_version
    else:
        version = alias_version(client, name, alias_or_version)
        if version is None:
            return None
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ValueError(f"model {name!r} has no version {version}") from None
        raise
    uri = mv.tags.get(MODEL_URI_TAG) or mv.source
    if not uri.startswith("s3://") and not fetch:
        uri = f"{MODELS_SCHEME}{name}/{mv.version}"
    elif not uri.startswith("s3://"):
        import mlflow

        if download_to is None:
            raise ValueError(f"{name} v{version}: source {uri!r} is not an s3:// prefix; give a download folder")
        uri = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(download_to / version))
    return ModelRef(name, str(mv.version), uri, dict(mv.tags))


def pin_base(ref: str, initial: str | None = None) -> dict:
    """pin_model_ref, except that an alias not set yet (a retraining loop's first round, before any champion)
    falls back to `initial` (model.initial_base) when one is configured; the result then names both."""
    if initial and ref.startswith(MODELS_SCHEME):
        name, which = parse_models_uri(ref)
        if not which.isdigit() and alias_version(MlflowClient(), name, which) is None:
            return {**pin_model_ref(initial), "ref": initial, "unset_alias": ref}
    return pin_model_ref(ref)


def first_round_config(cfg, pinned: dict | None):
    """The config a step runs with when pin_base fell back to model.initial_base: as if model.base were the
    initial one (a tiny model is built, its tokenizer trained), the pinned reference recorded either way."""
    if pinned and pinned.get("unset_alias") == cfg.model.base:
        return cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": pinned["ref"]})})
    return cfg


def pin_model_ref(ref: str) -> dict:
    """A model reference as one run uses it: {ref, uri, registered_model, version}. A models:/ reference is
    resolved here, once (an alias can move while the run goes on); any other reference passes through.
    The uri is the version's s3:// prefix, or models:/<name>/<version> when its files live in MLflow:
    never a local path, since the steps that load it may run in other pods (hf.local_copy fetches it)."""
    if not ref.startswith(MODELS_SCHEME):
        return {"ref": ref, "uri": ref, "registered_model": None, "version": None}
    name, which = parse_models_uri(ref)
    found = resolve(name, which, fetch=False)
    if found is None:
        raise ValueError(f"{ref}: registered model {name!r} has no alias {which!r} (not registered yet, or never "
                         "promoted): name a version, models:/<name>/<version>, or set it with `mixtune promote`")
    return {"ref": ref, "uri": found.uri, "registered_model": name, "version": found.version}


def git_commit() -> str:
    """The code version: baked into images as MIXTUNE_GIT_COMMIT, else read from a checkout."""
    if os.environ.get("MIXTUNE_GIT_COMMIT"):
        return os.environ["MIXTUNE_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")
