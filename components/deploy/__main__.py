"""CLI: python -m components.deploy --config cfg.yaml --version 7 --pipeline-run R
Rolls the InferenceService serve.kubernetes.name to that version (it must be the champion) as the DAG's
deploy step does; without --pipeline-run it redeploys any version, as `mixtune rollback` does."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from components.common.config import load_config
from components.deploy.core import DeployError, deploy_champion, redeploy


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m components.deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="mixtune YAML config (defaults when omitted)")
    p.add_argument("--version", required=True, help="model version number (or an alias such as champion)")
    p.add_argument("--pipeline-run", help="pipeline run name (MLflow parent run); omit to redeploy by hand")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    try:
        r = deploy_champion(cfg, args.version, args.pipeline_run) if args.pipeline_run else redeploy(cfg, args.version)
    except DeployError as e:
        print(f"python -m components.deploy: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(asdict(r), indent=2))


if __name__ == "__main__":
    main()
