"""CLI: python -m components.evaluate --config cfg.yaml --examples-uri s3://.../examples
--model-uri s3://.../model --base-model-uri s3://.../base --artifact-root s3://bucket/runs/R --pipeline-run R"""
from __future__ import annotations

import argparse
import json

from components.common.config import load_config
from components.evaluate.core import run_evaluate
from components.evaluate.scoring import flat_metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m components.evaluate", description=__doc__)
    p.add_argument("--config", help="mixtune YAML config (defaults when omitted)")
    p.add_argument("--examples-uri", required=True, help="s3:// prefix holding test.parquet and manifest.json")
    p.add_argument("--model-uri", required=True, help="s3:// prefix of the trained model (with _COMPLETE)")
    p.add_argument("--base-model-uri", required=True, help="s3:// prefix, local path or hub id of the base model")
    p.add_argument("--artifact-root", required=True, help="s3:// prefix of this pipeline run")
    p.add_argument("--pipeline-run", required=True, help="pipeline run name (MLflow parent run)")
    args = p.parse_args(argv)
    r = run_evaluate(
        load_config(args.config), args.examples_uri, args.model_uri, args.base_model_uri,
        args.artifact_root, args.pipeline_run,
    )
    print(json.dumps({"eval_uri": r.eval_uri, "mlflow_run_id": r.mlflow_run_id, "gate": r.metrics["gate"]["reason"],
                      **flat_metrics(r.metrics["tasks"])}, indent=2))


if __name__ == "__main__":
    main()
