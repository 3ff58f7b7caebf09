"""The model a server holds: a registered version loaded through MLflow's own pyfunc loader (so the
server runs exactly what `mlflow.pyfunc.load_model` gives a user), warmed up and smoke-tested before
anyone is answered with it.

A version is downloaded from its immutable models:/<name>/<version> (never the alias, which may move
while it downloads), or read from a local folder (KServe's storage initializer puts the version's
prefix in /mnt/models).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.common.mlflow_model import INPUT_EXAMPLE, MLMODEL

log = logging.getLogger("mixtune.serve")


class ModelLoadError(RuntimeError):
    """A version that cannot be served: not downloadable, no MLmodel, fails to load or to answer."""


@dataclass
class LoadedModel:
    name: str
    version: str
    alias: str | None  # the alias it was loaded for; None when served as a fixed version or folder
    source: str  # models:/<name>/<version>, or the local folder it came from
    pyfunc: object  # mlflow.pyfunc.PyFuncModel
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    folder: str | None = None  # our download, removed when the model is dropped

    def predict(self, texts: list[str]) -> list[str]:
        out = self.pyfunc.predict(texts)
        return [str(s) for s in (out.tolist() if hasattr(out, "tolist") else out)]

    def describe(self) -> dict:
        return {"model_name": self.name, "version": self.version, "alias": self.alias, "source": self.source,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
                "load_seconds": round(self.load_seconds, 3)}

    def drop(self) -> None:
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def smoke_test(model: LoadedModel) -> None:
    """Warm the model up (the first generate call pays one-off costs) and check that it answers: one
    string per input, not all empty. A version failing it is never swapped in."""
    try:
        out = model.predict(list(INPUT_EXAMPLE) * 2)
    except Exception as e:  # any failure means: do not serve it
        raise ModelLoadError(f"{model.source}: smoke request failed: {type(e).__name__}: {e}") from e
    if len(out) != 2 * len(INPUT_EXAMPLE) or not all(isinstance(s, str) for s in out) or not any(out):
        raise ModelLoadError(f"{model.source}: smoke request gave {out!r}: expected one non-empty summary per input")


def _load_folder(folder: str, where: str):
    import mlflow

    if not (Path(folder) / MLMODEL).is_file():
        raise ModelLoadError(f"{where} has no {MLMODEL} (registered before versions were MLflow models): "
                             "run `mixtune package-model --version N` to add it in place")
    try:
        return mlflow.pyfunc.load_model(folder)
    except Exception as e:
        raise ModelLoadError(f"{where}: MLflow could not load it: {type(e).__name__}: {e}") from e


def load_version(name: str, version: str, alias: str | None, cache: Path) -> LoadedModel:
    """Download models:/<name>/<version> into cache, load it, warm it and smoke-test it."""
    import mlflow

    started = time.perf_counter()
    source = f"models:/{name}/{version}"
    cache.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f"v{version}-", dir=cache)
    try:
        try:
            local = mlflow.artifacts.download_artifacts(source, dst_path=folder)
        except Exception as e:
            raise ModelLoadError(f"{source}: download failed: {type(e).__name__}: {str(e)[:500]}") from e
        model = LoadedModel(name, str(version), alias, source, _load_folder(local, source), folder=folder)
        smoke_test(model)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    model.load_seconds = time.perf_counter() - started
    log.info("loaded %s (alias %s) in %.1f s", source, alias, model.load_seconds)
    return model


def load_folder(folder: str, name: str, version: str) -> LoadedModel:
    """A version already on local disk (KServe: /mnt/models), served as it is."""
    started = time.perf_counter()
    model = LoadedModel(name, version, None, folder, _load_folder(folder, folder))
    smoke_test(model)
    model.load_seconds = time.perf_counter() - started
    return model
