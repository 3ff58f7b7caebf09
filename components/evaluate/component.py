"""KFP v2 wrapper of the evaluate step; the typed signature is the interface."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output


def evaluate(
    config_json: str,
    pipeline_run: str,
    artifact_root: str,
    examples_uri: str,
    model_uri: str,
    base_model_uri: str,
    metrics: Output[Metrics],
    report: Output[HTML],
) -> NamedTuple("EvaluateOutputs", [("eval_uri", str), ("candidate_primary", float), ("base_primary", float),
                                    ("gate_promote", bool)]):
    """Score the candidate, the base model and the current champion per task on the same frozen set;
    write metrics with intervals, the gate's verdict and an HTML report."""
    from collections import namedtuple
    from pathlib import Path

    from components.common.config import config_from_json
    from components.common.storage import run_root
    from components.evaluate.core import run_evaluate
    from components.evaluate.scoring import flat_metrics

    cfg = config_from_json(config_json)
    r = run_evaluate(cfg, examples_uri, model_uri, base_model_uri, run_root(cfg.storage, pipeline_run, artifact_root),
                     pipeline_run)
    for key, value in flat_metrics(r.metrics["tasks"]).items():
        metrics.log_metric(key.replace("/", "."), value)
    metrics.log_metric("n_examples", r.metrics["n_examples"])
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    Path(report.path).write_text(r.report_html)
    out = namedtuple("EvaluateOutputs", ["eval_uri", "candidate_primary", "base_primary", "gate_promote"])
    return out(r.eval_uri, float(r.primary("candidate")), float(r.primary("base")), bool(r.metrics["gate"]["promote"]))


def build(image: str):
    return dsl.component(evaluate, base_image=image, install_kfp_package=False)
