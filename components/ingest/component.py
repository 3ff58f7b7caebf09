"""KFP v2 wrapper of the ingest step; the typed signature is the interface."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output


def ingest(
    config_json: str, pipeline_run: str, artifact_root: str, metrics: Output[Metrics]
) -> NamedTuple("IngestOutputs", [("records_uri", str), ("dataset_version", str)]):
    """Read the sources (new objects only), redact PII, quarantine bad rows, dedup, split, and write
    an immutable, content-addressed dataset version to S3."""
    from collections import namedtuple

    from components.common.config import config_from_json
    from components.common.storage import run_root
    from components.ingest.core import run_ingest

    cfg = config_from_json(config_json)
    r = run_ingest(cfg, run_root(cfg.storage, pipeline_run, artifact_root), pipeline_run)
    values = {**r.counts, **{f"split_{k}": v for k, v in r.split_rows.items()},
              **{f"pii_{k}": v for k, v in r.pii.items()},
              "files_read": len(r.files_read), "files_reused": len(r.files_reused)}
    for key, value in values.items():
        metrics.log_metric(key, value)
    return namedtuple("IngestOutputs", ["records_uri", "dataset_version"])(r.records_uri, r.dataset_version)


def build(image: str):
    return dsl.component(ingest, base_image=image, install_kfp_package=False)
