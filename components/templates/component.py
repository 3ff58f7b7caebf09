"""KFP v2 wrapper of the templates step."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def templates(
    config_json: str, pipeline_run: str, artifact_root: str, records_uri: str, metrics: Output[Metrics]
) -> NamedTuple("TemplatesOutputs", [("examples_uri", str)]):
    """Expand ingested records into instruction/target examples for every task, then mix the tasks."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.common.storage import run_root
    from components.templates.core import run_templates

    cfg = config_from_json(config_json)
    r = run_templates(cfg, records_uri, run_root(cfg.storage, pipeline_run, artifact_root), pipeline_run)
    for split, n in r.split_rows.items():
        metrics.log_metric(f"examples_{split}", n)
    for task, report in r.tasks.items():
        metrics.log_metric(f"mixture_rate_{task}", report["rate"])
        metrics.log_metric(f"mixture_count_{task}", report["count"])
    metrics.log_metric("replay_examples", r.replay.get("examples", 0))
    metrics.log_metric("unused_records", r.unused_records.get("count", 0))
    return namedtuple("TemplatesOutputs", ["examples_uri"])(r.examples_uri)


def build(image: str):
    return dsl.component(templates, base_image=image, install_kfp_package=False)
