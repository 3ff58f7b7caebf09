"""`mixtune package-model`: make versions registered before versions were MLflow models loadable by
`mlflow.pyfunc.load_model` and `mlflow models serve`, in place.

The MLmodel and its small files are written into the version's own s3:// prefix, beside the weights
(components/common/mlflow_model.py); the weights, the version's source and its aliases stay as they
are, so infer, promote and rollback see the same version as before.
"""
from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.common import tracking
from components.common.config import MixtuneConfig
from components.common.mlflow_model import PACKAGED_TAG, has_mlflow_model, model_spec, write_mlflow_model
from components.common.storage import Store, require_complete
from components.common.tracking import MODEL_URI_TAG


class PackageError(ValueError):
    """A version that cannot be made an MLflow model here; the message says which and why."""


@dataclass(frozen=True)
class Packaged:
    version: str
    model_uri: str
    action: str  # "written", "rewritten" or "already an MLflow model"


def package_version(cfg: MixtuneConfig, version: str, rewrite: bool = False) -> Packaged:
    """Add the MLmodel to one version (rewrite=True: also to one that has it, e.g. after a prompt change)."""
    tracking.connect(cfg)
    client, name, store = MlflowClient(), cfg.registry.model_name, Store(cfg.storage)
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise PackageError(f"model {name!r} has no version {version}") from None
        raise
    uri = mv.tags.get(MODEL_URI_TAG) or mv.source
    if not uri.startswith("s3://"):
        raise PackageError(f"{name} v{mv.version}: its files are at {uri!r}, not an s3:// prefix mixtune wrote; "
                           "log it as an MLflow model yourself")
    require_complete(store, uri)
    had = has_mlflow_model(store, uri)
    if had and not rewrite:
        return Packaged(str(mv.version), uri, "already an MLflow model")
    write_mlflow_model(store, uri, model_spec(cfg))
    client.set_model_version_tag(name, mv.version, PACKAGED_TAG, "pyfunc")
    return Packaged(str(mv.version), uri, "rewritten" if had else "written")


def package_all(cfg: MixtuneConfig, rewrite: bool = False) -> list[Packaged]:
    tracking.connect(cfg)
    name = cfg.registry.model_name
    versions = sorted((mv.version for mv in MlflowClient().search_model_versions(f"name = '{name}'")), key=int)
    if not versions:
        raise PackageError(f"model {name!r} has no versions")
    return [package_version(cfg, v, rewrite) for v in versions]
