"""The `mixtune` command: run the DAG locally (or on each new batch of uploads), compile it for KFP or
submit it to a cluster, promote or roll back the champion, make sample data."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from components.common.config import PRESETS, ConfigError, MixtuneConfig, SourceConfig, load_config


def _overrides(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for kv in pairs or []:
        key, eq, value = kv.partition("=")
        if not eq or not key.strip() or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {kv!r}: expected KEY=VALUE with a dotted key, e.g. --set train.max_steps=50")
        out[key.strip()] = value
    return out


def version_number(text: str) -> str:
    """argparse type of --version: a registry version is a positive integer (kept as the text MLflow uses)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a model version number (a positive integer, like 3)")
    return str(int(text))


def require_state(args, cfg: MixtuneConfig) -> None:
    """Commands that read a local run's state refuse an empty folder instead of starting a new, empty one."""
    if getattr(args, "external_s3", False):
        return
    workdir = Path(args.workdir)
    uri = cfg.tracking.uri
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if not (workdir / "s3").is_dir() or (db is not None and not db.exists()):
        missing = f"{workdir}/s3" if not (workdir / "s3").is_dir() else f"{db} (tracking.uri)"
        raise ConfigError(f"no mixtune state in {workdir} ({missing} is missing): run `make demo` (or `mixtune "
                          f"run --local`) first, or pass the --workdir and --config it used")


def _config(args) -> MixtuneConfig:
    overrides = _overrides(args.set)
    cfg = load_config(args.config, {k: _yaml_value(v) for k, v in overrides.items()})
    if getattr(args, "data", None):
        sources = [SourceConfig(path=p, format=args.format) for p in args.data]
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": sources})})
    return cfg


def _yaml_value(text: str):
    import yaml

    return yaml.safe_load(text)


def _run_and_print(args, run, print_fn) -> int:
    """Run a local pipeline; on failure name the step, its last lines and its log file (StepFailed)."""
    try:
        summary = run()
    except RuntimeError as e:
        msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        print(f"mixtune {args.command} failed: {msg}\nstate is in {args.workdir}/", file=sys.stderr)
        return 1
    print_fn(summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_run(args) -> int:
    if not args.local:
        print("mixtune run: only --local is available here; use `mixtune compile` for a KFP cluster",
              file=sys.stderr)
        return 2
    from pipelines.local import run_local
    from pipelines.summary import print_summary

    return _run_and_print(args, lambda: run_local(_config(args), args.workdir, embedded_s3=not args.external_s3,
                                                  verbose=args.verbose), print_summary)


def cmd_compile(args) -> int:
    from pipelines.dag import compile_pipeline

    out = compile_pipeline(_config(args), args.output, scheduled=args.scheduled)
    print(f"compiled pipeline → {out}")
    return 0


def cmd_submit(args) -> int:
    """Start the pipeline on the KFP cluster in cluster.* (or schedule it, or start it only for new data)."""
    from pipelines.submit import SubmitError, schedule, submit, submit_if_new

    cfg = _config(args)
    try:
        if args.schedule:
            result = schedule(cfg, replace=args.replace)
        elif args.if_new_data:
            result = submit_if_new(cfg)
        else:
            result = submit(cfg, run_name=args.run_name)
    except SubmitError as e:
        print(f"mixtune submit: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"started": result.started, "reason": result.reason, "run_name": result.run_name,
                      "run_id": result.run_id, "fingerprint": result.fingerprint, "files": result.files}))
    return 0


def cmd_watch(args) -> int:
    """Run the DAG locally on each new batch of files in the watched sources (the local trigger)."""
    from components.common.storage import Store
    from pipelines.local import local_services
    from pipelines.trigger import TriggerError
    from pipelines.watch import check_watchable, describe, watch

    if args.max_runs is not None and args.max_runs < 1:
        print(f"mixtune watch: --max-runs must be at least 1, got {args.max_runs}", file=sys.stderr)
        return 2
    cfg = _config(args)
    try:
        check_watchable(cfg)  # before the S3 server starts: a config that cannot be watched fails fast
        with local_services(cfg, args.workdir, embedded_s3=not args.external_s3) as cfg:
            print(describe(cfg, Store(cfg.storage)), flush=True)
            records = watch(cfg, args.workdir, once=args.once, max_runs=args.max_runs,
                            log=lambda line: print(line, flush=True), verbose=args.verbose)
    except TriggerError as e:
        print(f"mixtune watch: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while the S3 server starts or stops
        return 130
    return 1 if any(r["status"] == "FAILED" for r in records) else 0


def cmd_upload(args) -> int:
    """Put files into the state folder's S3 (a team's export landing in the incoming prefix), so `mixtune watch`
    or `mixtune run --local` reads them; --to is an s3:// prefix or a key prefix under the storage root."""
    from components.common.storage import Store, join
    from pipelines.local import local_services

    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"mixtune upload: not a file: {', '.join(missing)}", file=sys.stderr)
        return 2
    with local_services(_config(args), args.workdir, embedded_s3=not args.external_s3) as cfg:
        store = Store(cfg.storage)
        prefix = args.to if args.to.startswith("s3://") else join(store.root, args.to)
        for f in args.files:
            uri = join(prefix, Path(f).name)
            store.put_file(uri, f)
            print(f"uploaded {f} -> {uri}")
    return 0


def cmd_train_job(args) -> int:
    """Print the TrainJob / PyTorchJob the train step creates from this config, for review."""
    import yaml

    from components.train.kubeflow import manifest_for

    cfg = _config(args)
    if cfg.train.launcher == "local":
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"launcher": "trainjob"})})
    manifest = manifest_for(cfg, args.job_uri, args.name)
    text = yaml.safe_dump(json.loads(json.dumps(manifest)), sort_keys=False)  # no YAML anchors for shared dicts
    if args.output:
        Path(args.output).write_text(text)
        print(f"{manifest['kind']} → {args.output}")
    else:
        print(text, end="")
    return 0


def cmd_infer(args) -> int:
    """Summarize new chat logs (data.sources, or --data) with a registered model: ingest -> infer."""
    from pipelines.inference import compile_inference, print_inference_summary, run_local

    cfg = _config(args)
    if args.compile:
        print(f"compiled inference pipeline → {compile_inference(cfg, args.compile)}")
        return 0
    require_state(args, cfg)
    return _run_and_print(args, lambda: run_local(cfg, args.workdir, embedded_s3=not args.external_s3,
                                                  verbose=args.verbose),
                          print_inference_summary)


def _alias_change(args, action) -> int:
    """Move the champion alias; with serve.kubernetes.enabled, roll the InferenceService to it too (a
    local `mixtune serve` follows the alias by itself)."""
    from components.register.aliases import AliasError
    from pipelines.local import local_services

    config = _config(args)
    require_state(args, config)
    try:
        with local_services(config, args.workdir, embedded_s3=not args.external_s3) as cfg:
            change = action(cfg)
            print(f"{change.model_name}: champion v{change.before or '-'} → v{change.after}"
                  f"{' (forced)' if change.forced else ''}\n  {change.reason}")
            if cfg.serve.kubernetes.enabled:
                return _redeploy(cfg, change.after, args.command)
    except AliasError as e:
        print(f"mixtune {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


def _redeploy(cfg: MixtuneConfig, version: str, command: str) -> int:
    from components.deploy.core import DeployError, redeploy

    k = cfg.serve.kubernetes
    try:
        result = redeploy(cfg, version)
    except DeployError as e:
        print(f"mixtune {command}: the alias moved, but InferenceService {k.namespace}/{k.name} does not serve "
              f"v{version}: {e}", file=sys.stderr)
        return 1
    print(f"  InferenceService {k.namespace}/{k.name} serves v{result.version} ({result.url or result.model_uri})")
    return 0


def cmd_promote(args) -> int:
    from components.register.aliases import promote

    return _alias_change(args, lambda cfg: promote(cfg, args.version, force=args.force, reason=args.reason))


def cmd_rollback(args) -> int:
    from components.register.aliases import rollback

    return _alias_change(args, lambda cfg: rollback(cfg, reason=args.reason))


def _existing_sqlite(cfg: MixtuneConfig) -> str | None:
    """The error to show when the config's SQLite registry does not exist (nothing was ever run here)."""
    uri = cfg.tracking.uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return (f"no MLflow database at {uri[len('sqlite:///'):]} (tracking.uri): nothing has been registered "
                "here; run `make demo` (or `mixtune run --local`) first, or pass the --config/--workdir it used")
    return None


def cmd_serve(args) -> int:
    """Serve the champion (serve.model) online, following its alias, from the state of `run --local`."""
    from components.common import tracking
    from components.serve.server import build_server, run_server
    from pipelines.local import local_services

    cfg = _config(args)
    require_state(args, cfg)
    with local_services(cfg, args.workdir, embedded_s3=not args.external_s3) as cfg:
        missing = _existing_sqlite(cfg)
        if missing:
            print(f"mixtune serve: {missing}", file=sys.stderr)
            return 1
        tracking.connect(cfg)
        parts = build_server(cfg, Path(args.workdir).resolve() / "serve-cache")
        run_server(parts, args.host or cfg.serve.host, cfg.serve.port if args.port is None else args.port)
    return 0


def cmd_package_model(args) -> int:
    """Make registered versions MLflow models in place (versions registered before they were)."""
    from components.common.storage import IncompleteModelError
    from components.register.package import PackageError, package_all, package_version
    from pipelines.local import local_services

    config = _config(args)
    require_state(args, config)
    with local_services(config, args.workdir, embedded_s3=not args.external_s3) as cfg:
        missing = _existing_sqlite(cfg)
        if missing:
            print(f"mixtune package-model: {missing}", file=sys.stderr)
            return 1
        try:
            done = (package_all(cfg, args.rewrite) if args.all
                    else [package_version(cfg, args.version, args.rewrite)])
        except (PackageError, IncompleteModelError) as e:
            print(f"mixtune package-model: {e}", file=sys.stderr)
            return 1
    for p in done:
        print(f"{cfg.registry.model_name} v{p.version}: {p.action} ({p.model_uri}/MLmodel)")
    return 0


def cmd_exec(args) -> int:
    """Run a command with the state folder's services up and MLflow pointed at them (MLFLOW_TRACKING_URI,
    MLFLOW_S3_ENDPOINT_URL and the embedded S3 server's keys in its environment), e.g. mlflow models serve."""
    import os
    import subprocess

    from pipelines.local import local_services

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        print("mixtune exec: give a command after --, e.g. mixtune exec -- mlflow models serve -m "
              "models:/mixtune-summarizer@champion --env-manager local", file=sys.stderr)
        return 2
    config = _config(args)
    require_state(args, config)
    with local_services(config, args.workdir, embedded_s3=not args.external_s3) as cfg:
        # mixtune's own environment first on PATH (mlflow models serve runs `uvicorn` from it).
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking.uri, "PATH": path}
        if cfg.storage.endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = cfg.storage.endpoint_url
        try:
            return subprocess.run(command, env=env).returncode
        except FileNotFoundError:
            print(f"mixtune exec: command not found: {command[0]}", file=sys.stderr)
            return 127
        except KeyboardInterrupt:
            return 130


def cmd_ui(args) -> int:
    """The state folder's S3 server and the MLflow UI with working artifact views, until Ctrl-C."""
    from pipelines.local import local_services
    from pipelines.ui import MlflowUI, UIServerError, links, wait_for_interrupt

    config = _config(args)
    require_state(args, config)
    workdir = Path(args.workdir).resolve()
    with local_services(config, workdir, embedded_s3=not args.external_s3) as cfg:
        try:
            with MlflowUI(cfg, workdir / "logs" / "mlflow-ui.log", args.host, args.port) as ui:
                print("\n".join(links(cfg, ui.url, workdir)) + "\nCtrl-C stops the UI and the S3 server.", flush=True)
                wait_for_interrupt(ui)
        except UIServerError as e:
            print(f"mixtune ui: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("mixtune ui: stopped", flush=True)
    return 0


def cmd_sample(args) -> int:
    from pipelines.sample_data import generate, write_jsonl

    path = write_jsonl(generate(args.n, args.seed), args.out)
    print(f"wrote {args.n} chat logs → {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixtune", description="FLAN-style multi-task fine-tuning pipeline")
    sub = p.add_subparsers(dest="command", required=True)

    def with_verbose(sp):
        sp.add_argument("--verbose", "-v", action="store_true",
                        help="show every step's whole output (it is always in <workdir>/logs/<run>/)")

    def with_config(sp):
        sp.add_argument("--config", help="YAML config (defaults when omitted)")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.max_steps=50 (repeatable)")
        return sp

    run = with_config(sub.add_parser("run", help="run the whole DAG"))
    run.add_argument("--local", action="store_true", help="on this machine (kfp.local, embedded S3, SQLite MLflow)")
    run.add_argument("--workdir", default=".mixtune", help="local state: S3 data, MLflow DB, KFP outputs")
    run.add_argument("--data", nargs="+", help="input files or globs (replaces data.sources)")
    run.add_argument("--format", default="chatlog", choices=list(PRESETS),
                     help="built-in format of --data (other exports: a config source with a `mapping`)")
    run.add_argument("--external-s3", action="store_true", help="use storage.* from the config, start no S3 server")
    run.add_argument("--summary-json", help="also write the summary as JSON here")
    with_verbose(run)
    run.set_defaults(func=cmd_run)

    comp = with_config(sub.add_parser("compile", help="compile the DAG to KFP v2 YAML"))
    comp.add_argument("--output", "-o", default="mixtune-pipeline.yaml")
    comp.add_argument("--scheduled", action="store_true",
                      help="the recurring-run variant (only config_json; runs named by KFP's run id)")
    comp.set_defaults(func=cmd_compile)

    subm = with_config(sub.add_parser("submit", help="start the pipeline on the KFP cluster in cluster.*"))
    subm.add_argument("--if-new-data", action="store_true",
                      help="only if the sources' current files have not started a run yet (the trigger)")
    subm.add_argument("--schedule", action="store_true", help="create the KFP recurring run (cluster.schedule)")
    subm.add_argument("--replace", action="store_true", help="with --schedule: recreate an existing one")
    subm.add_argument("--run-name", help="KFP run name and pipeline_run (default mixtune-<time>)")
    subm.set_defaults(func=cmd_submit)

    wat = with_config(sub.add_parser("watch", help="run the DAG locally on each new batch of uploads to the "
                                     "watched sources (the local stand-in for the cluster trigger)"))
    wat.add_argument("--workdir", default=".mixtune", help="local state: S3 data, MLflow DB, KFP outputs")
    wat.add_argument("--external-s3", action="store_true", help="use storage.* from the config, start no S3 server")
    wat.add_argument("--once", action="store_true", help="look once: run if there is a new batch, then exit")
    wat.add_argument("--max-runs", type=int, metavar="N", help="exit after N runs")
    with_verbose(wat)
    wat.set_defaults(func=cmd_watch)

    up = with_config(sub.add_parser("upload", help="put files into the state folder's S3, e.g. new chat logs "
                                    "into the prefix `mixtune watch` watches"))
    up.add_argument("files", nargs="+", help="local files")
    up.add_argument("--to", required=True, help="s3://bucket/prefix/, or a key prefix under the storage root "
                    "(e.g. incoming/chatlogs/)")
    up.add_argument("--workdir", default=".mixtune", help="local state: S3 data, MLflow DB, KFP outputs")
    up.add_argument("--external-s3", action="store_true", help="use storage.* from the config, start no S3 server")
    up.set_defaults(func=cmd_upload)

    tj = with_config(sub.add_parser("train-job", help="print the TrainJob/PyTorchJob the train step creates"))
    tj.add_argument("--job-uri", default="s3://<bucket>/runs/<run>/train/job.json",
                    help="the job spec URI the pods read (the step writes it)")
    tj.add_argument("--name", default="mixtune-run-train")
    tj.add_argument("--output", "-o")
    tj.set_defaults(func=cmd_train_job)

    def with_registry(sp):
        with_config(sp)
        sp.add_argument("--workdir", default=".mixtune", help="local state of `run --local` (S3 data, MLflow DB)")
        sp.add_argument("--external-s3", action="store_true", help="use storage.* from the config")
        sp.add_argument("--reason", help="why; recorded on the model version and the registered model")
        return sp

    inf = with_config(sub.add_parser("infer", help="summarize new chat logs with the champion (or --set infer.model=N)"))
    inf.add_argument("--workdir", default=".mixtune", help="local state of `run --local` (S3 data, MLflow DB)")
    inf.add_argument("--data", nargs="+", help="input files or globs (replaces data.sources)")
    inf.add_argument("--format", default="chatlog", choices=list(PRESETS), help="built-in format of --data")
    inf.add_argument("--external-s3", action="store_true", help="use storage.* from the config, start no S3 server")
    inf.add_argument("--summary-json", help="also write the summary as JSON here")
    with_verbose(inf)
    inf.add_argument("--compile", metavar="YAML", help="compile the ingest -> infer pipeline for KFP instead")
    inf.set_defaults(func=cmd_infer)

    prom = with_registry(sub.add_parser("promote", help="make a version champion if it passes the gate"))
    prom.add_argument("--version", required=True, type=version_number, help="model version number")
    prom.add_argument("--force", action="store_true", help="skip the gate (needs --reason)")
    prom.set_defaults(func=cmd_promote)
    roll = with_registry(sub.add_parser("rollback", help="champion back to the champion it replaced"))
    roll.set_defaults(func=cmd_rollback)

    srv = with_config(sub.add_parser("serve", help="serve the champion online (MLflow scoring protocol), "
                                     "following its alias"))
    srv.add_argument("--workdir", default=".mixtune", help="local state of `run --local` (S3 data, MLflow DB)")
    srv.add_argument("--external-s3", action="store_true", help="use storage.* and tracking.* from the config")
    srv.add_argument("--host", help="default serve.host (127.0.0.1)")
    srv.add_argument("--port", type=int, help="default serve.port (8080)")
    srv.set_defaults(func=cmd_serve)

    pkg = with_config(sub.add_parser("package-model", help="make registered versions MLflow models in place "
                                     "(versions registered before they were)"))
    pkg.add_argument("--workdir", default=".mixtune", help="local state of `run --local` (S3 data, MLflow DB)")
    pkg.add_argument("--external-s3", action="store_true", help="use storage.* from the config")
    which = pkg.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=version_number, help="model version number")
    which.add_argument("--all", action="store_true", help="every version of registry.model_name")
    pkg.add_argument("--rewrite", action="store_true", help="also rewrite versions that have an MLmodel")
    pkg.set_defaults(func=cmd_package_model)

    ex = with_config(sub.add_parser("exec", help="run a command with the state folder's S3 server up and "
                                    "MLflow pointed at it"))
    ex.add_argument("--workdir", default=".mixtune", help="local state of `run --local` (S3 data, MLflow DB)")
    ex.add_argument("--external-s3", action="store_true", help="use storage.* from the config")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command, e.g. -- python my_client.py")
    ex.set_defaults(func=cmd_exec)

    ui = with_config(sub.add_parser("ui", help="open what local runs produced: the MLflow UI (artifacts "
                                    "included) over the state folder's S3 server, until Ctrl-C"))
    ui.add_argument("--workdir", default=".mixtune", help="local state of `run --local` (S3 data, MLflow DB)")
    ui.add_argument("--external-s3", action="store_true", help="use storage.* from the config")
    ui.add_argument("--host", default="127.0.0.1", help="address the UI listens on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, help="UI port (default: a free one)")
    ui.set_defaults(func=cmd_ui)

    sample = sub.add_parser("sample", help="write generated sample chat logs (JSONL)")
    sample.add_argument("--out", required=True)
    sample.add_argument("-n", type=int, default=1500)
    sample.add_argument("--seed", type=int, default=7)
    sample.set_defaults(func=cmd_sample)
    return p


def _exit_on_sigterm(signum, frame) -> None:
    # A normal exit unwinds the `with` blocks: the embedded S3 server runs in its own session and
    # would outlive a `kill` of this process otherwise.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    import signal

    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return args.func(args)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
