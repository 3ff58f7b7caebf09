"""`python -m tests.faults.run_data_steps CONFIG_JSON RUN ROOT OUT`: ingest → templates → shards for
one pipeline run, as the DAG chains them; writes the step outputs to OUT (JSON). A separate process,
so two runs can go at once (tests/faults/test_concurrent_runs.py)."""
import json
import sys
from pathlib import Path

from components.common.config import config_from_json
from components.ingest.core import run_ingest
from components.shards.core import run_shards
from components.templates.core import run_templates


def main(config_path: str, run: str, root: str, out: str) -> None:
    cfg = config_from_json(Path(config_path).read_text())
    ingest = run_ingest(cfg, root, run)
    templates = run_templates(cfg, ingest.records_uri, root, run)
    shards = run_shards(cfg, templates.examples_uri, root, run)
    Path(out).write_text(json.dumps({
        "records_uri": ingest.records_uri, "dataset_version": ingest.dataset_version, "counts": ingest.counts,
        "examples_uri": templates.examples_uri, "shards_uri": shards.shards_uri,
        "shards": sorted(s["sha256"] for split in shards.manifest["splits"].values() for s in split["shards"])}))


if __name__ == "__main__":
    main(*sys.argv[1:])
