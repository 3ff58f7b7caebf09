"""Assemble and run a server: the model slot, the alias follower (or a fixed version or folder), the
batcher and the FastAPI app, on uvicorn.

Two ways to say what to serve:
- registry: `serve.model` is an alias to follow (champion) or a version number; versions come from the
  MLflow registry at tracking.uri (`mixtune serve`, or the container with MLflow access);
- folder: a version's files already on disk (KServe's storage initializer writes the version's S3
  prefix to /mnt/models), with its name and version given; nothing is polled, the deploy step rolls
  a new version out as a new revision.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from components.common.config import MixtuneConfig, ServeConfig
from components.serve.app import create_app
from components.serve.follower import AliasFollower, ModelSlot
from components.serve.metrics import ServeMetrics
from components.serve.models import load_folder


@dataclass
class Parts:
    app: object  # the FastAPI app
    slot: ModelSlot
    follower: AliasFollower
    metrics: ServeMetrics
    settings: ServeConfig


def build_server(cfg: MixtuneConfig, cache: Path, folder: str | None = None, name: str | None = None,
                 version: str | None = None, **follower_options) -> Parts:
    """The server's parts; nothing starts until the app's lifespan does (uvicorn, or a TestClient)."""
    settings = cfg.serve
    slot, metrics = ModelSlot(), ServeMetrics()
    name = name or cfg.registry.model_name
    if folder is not None:
        if not version:
            raise ValueError("serving a folder needs its version (--version or MIXTUNE_MODEL_VERSION)")
        follower_options["loader"] = lambda n, v, alias, cache: load_folder(folder, n, v)
        which = version
    else:
        which = version or settings.model
    follower = AliasFollower(name, which, slot, metrics, cache, settings.poll_seconds, **follower_options)
    return Parts(create_app(settings, slot, follower, metrics), slot, follower, metrics, settings)


def configure_logging() -> None:
    """One line per load and swap; no per-download or per-load progress bars in a server's log."""
    import os
    import warnings

    from transformers.utils import logging as hf_logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("mixtune.serve")
    if not log.handlers:
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def run_server(parts: Parts, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's own handlers: in-flight requests finish, then it stops)."""
    import uvicorn

    configure_logging()
    where = f"http://{host}:{port}"
    following = parts.follower.alias or f"v{parts.follower.which}"
    print(f"mixtune serve: {parts.follower.name} ({following}) on {where}\n"
          f"  POST {where}/invocations   {{\"inputs\": [\"Customer: ...\\nAgent: ...\"]}}\n"
          f"  GET  {where}/version  /ready  /health  /metrics", flush=True)
    uvicorn.Server(uvicorn.Config(parts.app, host=host, port=port, log_level="warning",
                                  timeout_graceful_shutdown=parts.settings.request_timeout_seconds)).run()
