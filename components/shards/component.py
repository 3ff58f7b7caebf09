"""KFP v2 wrapper of the shards step."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def shards(
    config_json: str, pipeline_run: str, artifact_root: str, examples_uri: str, metrics: Output[Metrics]
) -> NamedTuple("ShardsOutputs", [("shards_uri", str)]):
    """Tokenize examples with the base model's tokenizer into per-stream Parquet shards with a manifest."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.shards.core import run_shards

    r = run_shards(config_from_json(config_json), examples_uri, artifact_root, pipeline_run)
    metrics.log_metric("vocab_size", r.manifest["vocab_size"])
    for split, info in r.manifest["splits"].items():
        metrics.log_metric(f"{split}_rows", info["rows"])
        metrics.log_metric(f"{split}_source_tokens", info["source_tokens"])
        metrics.log_metric(f"{split}_target_tokens", info["target_tokens"])
    metrics.log_metric("tokens_per_second", r.manifest["tokenize"]["tokens_per_second"])
    return namedtuple("ShardsOutputs", ["shards_uri"])(r.shards_uri)


def build(image: str):
    return dsl.component(shards, base_image=image, install_kfp_package=False)
