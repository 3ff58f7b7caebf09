"""CLI: python -m components.templates --config cfg.yaml --records-uri ... --artifact-root ... --pipeline-run R"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from components.common.config import load_config
from components.templates.core import run_templates


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m components.templates", description=__doc__)
    p.add_argument("--config", help="mixtune YAML config (defaults when omitted)")
    p.add_argument("--records-uri", required=True, help="s3:// prefix written by ingest")
    p.add_argument("--artifact-root", required=True, help="s3:// prefix of this pipeline run")
    p.add_argument("--pipeline-run", required=True, help="pipeline run name (MLflow parent run)")
    args = p.parse_args(argv)
    result = run_templates(load_config(args.config), args.records_uri, args.artifact_root, args.pipeline_run)
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
