"""CLI: python -m components.serve [--config C] [--set serve.max_batch=32] [--host H] [--port P]
  registry mode (default): follow serve.model (alias champion, or a version) in the MLflow registry at
  tracking.uri; folder mode: --model-uri /mnt/models (or an s3:// prefix) --name N --version V, which
  is how the KServe InferenceService runs it (MIXTUNE_MODEL_URI / _NAME / _VERSION in the env)."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import yaml

from components.common.config import load_config
from components.serve.server import build_server, run_server


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m components.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="mixtune YAML config (defaults when omitted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--model-uri", default=os.environ.get("MIXTUNE_MODEL_URI"),
                   help="serve this version's files (a local folder or s3:// prefix) instead of the registry")
    p.add_argument("--name", default=os.environ.get("MIXTUNE_MODEL_NAME"), help="registered model name")
    p.add_argument("--version", default=os.environ.get("MIXTUNE_MODEL_VERSION"),
                   help="the version: required with --model-uri; else a fixed version instead of serve.model")
    p.add_argument("--host", help="default serve.host")
    p.add_argument("--port", type=int, help="default serve.port")
    args = p.parse_args(argv)
    overrides = {}
    for kv in args.set:
        key, sep, value = kv.partition("=")
        if not sep:
            p.error(f"--set {kv!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    cfg = load_config(args.config, overrides)
    cache = Path(os.environ.get("MIXTUNE_CACHE", tempfile.gettempdir())) / "serve"
    folder = args.model_uri
    if folder and folder.startswith("s3://"):
        from components.common.hf import local_copy
        from components.common.storage import Store, require_complete

        store = Store(cfg.storage)
        require_complete(store, folder)
        folder = local_copy(folder, store)
    if folder is None:
        from components.common.tracking import connect

        connect(cfg)
    parts = build_server(cfg, cache, folder=folder, name=args.name, version=args.version)
    run_server(parts, args.host or cfg.serve.host, cfg.serve.port if args.port is None else args.port)


if __name__ == "__main__":
    main()
