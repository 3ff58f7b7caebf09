"""KFP v2 wrapper of the infer step; the typed signature is the interface."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def infer(
    config_json: str,
    pipeline_run: str,
    artifact_root: str,
    records_uri: str,
    metrics: Output[Metrics],
) -> NamedTuple("InferOutputs", [("summaries_uri", str), ("model_version", str)]):
    """Summarize every dialogue of an ingested dataset with the registered model infer.model names
    (default: the champion); write summaries.parquet and its manifest under <artifact_root>/infer."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.common.storage import run_root
    from components.infer.core import run_infer

    cfg = config_from_json(config_json)
    r = run_infer(cfg, records_uri, run_root(cfg.storage, pipeline_run, artifact_root), pipeline_run)
    for key, value in r.manifest["counts"].items():
        metrics.log_metric(key, value)
    if r.manifest["summaries_per_second"] is not None:
        metrics.log_metric("summaries_per_second", r.manifest["summaries_per_second"])
    metrics.log_metric("model_version", float(r.model_version))
    return namedtuple("InferOutputs", ["summaries_uri", "model_version"])(r.summaries_uri, r.model_version)


def build(image: str):
    return dsl.component(infer, base_image=image, install_kfp_package=False)
