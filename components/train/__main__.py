"""CLI: python -m components.train --config cfg.yaml --shards-uri s3://... --artifact-root s3://... --pipeline-run ID"""
from __future__ import annotations

import argparse
import dataclasses
import json

from components.common.config import load_config
from components.train.core import run_train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m components.train", description="Train with DeepSpeed on the shards.")
    p.add_argument("--config", default=None, help="mixtune YAML config (defaults when omitted)")
    p.add_argument("--shards-uri", required=True, help="s3:// prefix written by the shards step")
    p.add_argument("--artifact-root", required=True, help="s3:// prefix; outputs go under <root>/train")
    p.add_argument("--pipeline-run", required=True, help="pipeline run id (the MLflow parent run)")
    args = p.parse_args(argv)
    result = run_train(load_config(args.config), args.shards_uri, args.artifact_root, args.pipeline_run)
    print(json.dumps(dataclasses.asdict(result), indent=2))


if __name__ == "__main__":
    main()
