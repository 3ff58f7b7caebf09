"""KFP v2 wrappers of the shards step: one task, or prepare -> partitions (ParallelFor) -> merge."""
from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def shards(
    config_json: str, pipeline_run: str, artifact_root: str, examples_uri: str, metrics: Output[Metrics]
) -> NamedTuple("ShardsOutputs", [("shards_uri", str)]):
    """Tokenize examples with the base model's tokenizer into per-stream Parquet shards with a manifest."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.common.storage import run_root
    from components.shards.core import run_shards

    cfg = config_from_json(config_json)
    r = run_shards(cfg, examples_uri, run_root(cfg.storage, pipeline_run, artifact_root), pipeline_run)
    metrics.log_metric("vocab_size", r.manifest["vocab_size"])
    for split, info in r.manifest["splits"].items():
        metrics.log_metric(f"{split}_rows", info["rows"])
        metrics.log_metric(f"{split}_source_tokens", info["source_tokens"])
        metrics.log_metric(f"{split}_target_tokens", info["target_tokens"])
    metrics.log_metric("tokens_per_second", r.manifest["tokenize"]["tokens_per_second"])
    return namedtuple("ShardsOutputs", ["shards_uri"])(r.shards_uri)


def shards_prepare(config_json: str, pipeline_run: str, artifact_root: str, examples_uri: str) -> str:
    """Fan-out, first task: the tokenizer and the partition plan; returns the plan's URI."""
    from components.common.config import config_from_json
    from components.common.storage import Store, run_root
    from components.shards.fanout import prepare_fanout

    cfg = config_from_json(config_json)
    return prepare_fanout(cfg, examples_uri, run_root(cfg.storage, pipeline_run, artifact_root), Store(cfg.storage))


def shards_partition(config_json: str, pipeline_run: str, artifact_root: str, partition: str) -> str:
    """Fan-out, one ParallelFor task: partition `partition` of every split; returns its partial's reference."""
    from components.common.config import config_from_json
    from components.common.storage import Store, run_root
    from components.shards.fanout import run_partition

    cfg = config_from_json(config_json)
    return run_partition(cfg, run_root(cfg.storage, pipeline_run, artifact_root), int(partition), Store(cfg.storage))


def shards_merge(config_json: str, pipeline_run: str, artifact_root: str, partials: List[str],
                 metrics: Output[Metrics]) -> NamedTuple("ShardsOutputs", [("shards_uri", str)]):
    """Fan-out, last task: merge the partials into the manifest and record the step in MLflow."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.common.storage import Store, run_root
    from components.common.tracking import step_run
    from components.shards.core import log_shards
    from components.shards.fanout import merge_fanout

    cfg = config_from_json(config_json)
    with step_run(cfg, pipeline_run, "shards"):
        r = merge_fanout(run_root(cfg.storage, pipeline_run, artifact_root), partials, Store(cfg.storage))
        log_shards(cfg, r.manifest)
    metrics.log_metric("partitions", len(partials))
    metrics.log_metric("tokens_per_second", r.manifest["tokenize"]["tokens_per_second"])
    return namedtuple("ShardsOutputs", ["shards_uri"])(r.shards_uri)


def build(image: str):
    return dsl.component(shards, base_image=image, install_kfp_package=False)


def build_fanout(image: str):
    """(prepare, partition, merge) components."""
    return tuple(dsl.component(f, base_image=image, install_kfp_package=False)
                 for f in (shards_prepare, shards_partition, shards_merge))
