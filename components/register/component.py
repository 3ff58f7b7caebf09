"""KFP v2 wrapper of the register step; the typed signature is the interface."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def register(
    config_json: str,
    pipeline_run: str,
    model_uri: str,
    eval_uri: str,
    train_run_id: str,
    metrics: Output[Metrics],
) -> NamedTuple("RegisterOutputs", [("version", str), ("promoted", bool), ("aliases", str)]):
    """Register the model version; alias challenger always, champion only if it beats the champion."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.register.core import run_register

    r = run_register(config_from_json(config_json), model_uri, eval_uri, train_run_id, pipeline_run)
    metrics.log_metric("version", float(r.version))
    metrics.log_metric("promoted", 1.0 if r.promoted else 0.0)
    out = namedtuple("RegisterOutputs", ["version", "promoted", "aliases"])
    return out(r.version, r.promoted, ",".join(r.aliases))


def build(image: str):
    return dsl.component(register, base_image=image, install_kfp_package=False)
