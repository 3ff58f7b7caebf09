"""CLI: python -m components.ingest --config cfg.yaml --artifact-root s3://bucket/runs/R --pipeline-run R"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from components.common.config import load_config
from components.ingest.core import run_ingest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m components.ingest", description=__doc__)
    p.add_argument("--config", help="mixtune YAML config (defaults when omitted)")
    p.add_argument("--artifact-root", required=True, help="s3:// prefix of this pipeline run")
    p.add_argument("--pipeline-run", required=True, help="pipeline run name (MLflow parent run)")
    args = p.parse_args(argv)
    result = run_ingest(load_config(args.config), args.artifact_root, args.pipeline_run)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
