"""CLI: python -m components.shards --config cfg.yaml --examples-uri ... --artifact-root ... --pipeline-run R"""
from __future__ import annotations

import argparse
import json

from components.common.config import load_config
from components.shards.core import run_shards


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m components.shards", description=__doc__)
    p.add_argument("--config", help="mixtune YAML config (defaults when omitted)")
    p.add_argument("--examples-uri", required=True, help="s3:// prefix written by templates")
    p.add_argument("--artifact-root", required=True, help="s3:// prefix of this pipeline run")
    p.add_argument("--pipeline-run", required=True, help="pipeline run name (MLflow parent run)")
    args = p.parse_args(argv)
    result = run_shards(load_config(args.config), args.examples_uri, args.artifact_root, args.pipeline_run)
    splits = {k: {"rows": v["rows"], "shards": len(v["shards"]), "streams": {s: x["rows"] for s, x in v["streams"].items()}}
              for k, v in result.manifest["splits"].items()}
    print(json.dumps({"shards_uri": result.shards_uri, "vocab_size": result.manifest["vocab_size"],
                      "splits": splits, "tokenize": result.manifest["tokenize"]}, indent=2))


if __name__ == "__main__":
    main()
