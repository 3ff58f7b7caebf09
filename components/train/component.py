"""The train step as a KFP v2 lightweight component (the function source is what KFP ships)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def train(
    config_json: str, pipeline_run: str, artifact_root: str, shards_uri: str, metrics: Output[Metrics]
) -> NamedTuple("TrainOutputs", [("model_uri", str), ("base_model_uri", str), ("mlflow_run_id", str)]):
    """Train with DeepSpeed on the shards; the consolidated model lands in S3."""
    # Imports live in the body: KFP serialises only this function's source.
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.common.storage import run_root
    from components.train.core import run_train

    cfg = config_from_json(config_json)
    r = run_train(cfg, shards_uri, run_root(cfg.storage, pipeline_run, artifact_root), pipeline_run)
    for name in ("final_loss", "first_loss", "steps", "train_seconds", "tokens_seen", "tokens_per_second"):
        metrics.log_metric(name, float(getattr(r, name)))
    outputs = namedtuple("TrainOutputs", ["model_uri", "base_model_uri", "mlflow_run_id"])
    return outputs(r.model_uri, r.base_model_uri, r.mlflow_run_id)


def build(image: str):
    """The component for a given image (the GPU training image in a cluster)."""
    return dsl.component(train, base_image=image, install_kfp_package=False)
