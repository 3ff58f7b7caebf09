"""KFP v2 wrapper of the ingest step; the typed signature is the interface."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def ingest(
    config_json: str, pipeline_run: str, artifact_root: str, metrics: Output[Metrics]
) -> NamedTuple("IngestOutputs", [("records_uri", str), ("dataset_version", str)]):
    """Read the configured sources, quarantine bad rows, split, and write Parquet records to S3."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.ingest.core import run_ingest

    r = run_ingest(config_from_json(config_json), artifact_root, pipeline_run)
    for key, value in {**r.counts, **{f"split_{k}": v for k, v in r.split_rows.items()}}.items():
        metrics.log_metric(f"rows_{key}" if not key.startswith("split_") else key, value)
    return namedtuple("IngestOutputs", ["records_uri", "dataset_version"])(r.records_uri, r.dataset_version)


def build(image: str):
    return dsl.component(ingest, base_image=image, install_kfp_package=False)
