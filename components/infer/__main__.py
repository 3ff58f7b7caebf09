"""CLI: python -m components.infer --config cfg.yaml --records-uri s3://.../datasets/V
--artifact-root s3://bucket/runs/R --pipeline-run R"""
from __future__ import annotations

import argparse
import json

from components.common.config import load_config
from components.infer.core import run_infer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m components.infer", description=__doc__)
    p.add_argument("--config", help="mixtune YAML config (defaults when omitted); infer.model picks the version")
    p.add_argument("--records-uri", required=True, help="s3:// prefix of an ingested dataset (manifest.json + splits)")
    p.add_argument("--artifact-root", required=True, help="s3:// prefix of this pipeline run")
    p.add_argument("--pipeline-run", required=True, help="pipeline run name (MLflow parent run)")
    args = p.parse_args(argv)
    r = run_infer(load_config(args.config), args.records_uri, args.artifact_root, args.pipeline_run)
    print(json.dumps({"summaries_uri": r.summaries_uri, "model_name": r.model_name, "model_version": r.model_version,
                      "mlflow_run_id": r.mlflow_run_id, "counts": r.manifest["counts"],
                      "skipped_reasons": r.manifest["skipped_reasons"],
                      "summaries_per_second": r.manifest["summaries_per_second"]}, indent=2))


if __name__ == "__main__":
    main()
