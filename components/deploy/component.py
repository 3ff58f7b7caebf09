"""KFP v2 wrapper of the deploy step; the typed signature is the interface."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def deploy(
    config_json: str, pipeline_run: str, version: str, metrics: Output[Metrics]
) -> NamedTuple("DeployOutputs", [("url", str), ("revision", str)]):
    """Roll the champion's InferenceService to this version (canary, Ready, smoke request, all traffic);
    if it does not come up, put it and the champion alias back to the champion it replaced, and fail."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.deploy.core import deploy_champion

    r = deploy_champion(config_from_json(config_json), version, pipeline_run)
    metrics.log_metric("deployed", 0.0 if r.skipped else 1.0)
    metrics.log_metric("ready_seconds", float(r.ready_seconds))
    return namedtuple("DeployOutputs", ["url", "revision"])(r.url, r.revision)


def build(image: str):
    return dsl.component(deploy, base_image=image, install_kfp_package=False)
