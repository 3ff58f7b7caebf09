"""KFP v2 wrapper of the evaluate step; the typed signature is the interface."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def evaluate(
    config_json: str,
    pipeline_run: str,
    artifact_root: str,
    examples_uri: str,
    model_uri: str,
    base_model_uri: str,
    metrics: Output[Metrics],
) -> NamedTuple("EvaluateOutputs", [("eval_uri", str), ("candidate_rougeL", float), ("base_rougeL", float)]):
    """Score the candidate, the base model and the current champion with ROUGE on the same test set."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.evaluate.core import run_evaluate

    cfg = config_from_json(config_json)
    r = run_evaluate(cfg, examples_uri, model_uri, base_model_uri, artifact_root, pipeline_run)
    for key, value in r.flat_metrics().items():
        metrics.log_metric(key, value)
    metrics.log_metric("n_examples", r.metrics["n_examples"])
    out = namedtuple("EvaluateOutputs", ["eval_uri", "candidate_rougeL", "base_rougeL"])
    return out(r.eval_uri, float(r.metrics["candidate"]["rougeL"]), float(r.metrics["base"]["rougeL"]))


def build(image: str):
    return dsl.component(evaluate, base_image=image, install_kfp_package=False)
