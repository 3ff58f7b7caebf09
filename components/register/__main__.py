"""CLI: python -m components.register --config cfg.yaml --model-uri s3://.../model
--eval-uri s3://bucket/runs/R/evaluate --train-run-id RUN_ID --pipeline-run R"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from components.common.config import load_config
from components.register.core import run_register


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m components.register", description=__doc__)
    p.add_argument("--config", help="mixtune YAML config (defaults when omitted)")
    p.add_argument("--model-uri", required=True, help="s3:// prefix of the trained model (with _COMPLETE)")
    p.add_argument("--eval-uri", required=True, help="s3:// prefix the evaluate step wrote metrics.json to")
    p.add_argument("--train-run-id", default="", help="MLflow run id of the train step (lineage)")
    p.add_argument("--pipeline-run", required=True, help="pipeline run name (MLflow parent run)")
    args = p.parse_args(argv)
    r = run_register(load_config(args.config), args.model_uri, args.eval_uri, args.train_run_id, args.pipeline_run)
    summary = {k: v for k, v in asdict(r).items() if k != "tags"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
