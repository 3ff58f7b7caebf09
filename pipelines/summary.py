"""What a person wants to know after a run, read back from S3 and the MLflow registry."""
from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from components.common import tracking
from components.common.config import MixtuneConfig
from components.common.schemas import read_rows
from components.common.storage import Store, join


def collect_summary(cfg: MixtuneConfig, store: Store, artifact_root: str, pipeline_run: str) -> dict:
    ingest = store.get_json(join(artifact_root, "ingest", "report.json"))
    templates = store.get_json(join(artifact_root, "templates", "manifest.json"))
    shards = store.get_json(join(artifact_root, "shards", "manifest.json"))
    metrics = store.get_json(join(artifact_root, "evaluate", "metrics.json"))
    rows = [
        ("ingest (rows)", ingest["counts"]["rows_read"], ingest["counts"]["rows_kept"],
         ingest["counts"]["rows_quarantined"], ingest["counts"]["rows_duplicate"]),
        ("templates", sum(ingest["split_rows"].values()), sum(templates["split_rows"].values()), 0, 0),
        ("shards", sum(templates["split_rows"].values()),
         sum(s["rows"] for s in shards["splits"].values()), 0, 0),
    ]
    example = read_rows(store, join(artifact_root, "evaluate", "predictions.parquet"))[0]
    tracking.setup(cfg)
    client = MlflowClient()
    # The register step's own run says which version this pipeline run ended with: one it created,
    # or (a rerun that reused its model) the one an earlier run registered.
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    steps = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{tracking.PIPELINE_TAG}` = '{pipeline_run}' and tags.`mixtune.step` = 'register'") if experiment else []
    registered = None
    if steps and steps[0].data.tags.get("mixtune.model_version"):
        tags = steps[0].data.tags
        v = client.get_model_version(cfg.registry.model_name, tags["mixtune.model_version"])
        registered = {"name": cfg.registry.model_name, "version": str(v.version), "aliases": list(v.aliases),
                      "decision": tags.get("mixtune.gate_reason", ""), "new": tags.get("mixtune.reused") != "true"}
    return {
        "pipeline_run": pipeline_run,
        "artifact_root": artifact_root,
        "dataset_version": ingest["dataset_version"],
        "rows": rows,
        "quarantine_reasons": ingest.get("quarantine_reasons", {}),
        "pii": ingest.get("pii", {}),
        "files": {"read": len(ingest["files_read"]), "reused": len(ingest["files_reused"])},
        "mixture": {s: round(w, 3) for s, w in templates.get("mixture", {}).get("weights", {}).items()},
        # What the run replayed: {uri, version (of registry.model_name), from, note, ratio, examples, ...}.
        "replay": templates.get("replay") or {},
        "base_model": shards.get("base_model") or {},
        "evaluation": metrics,
        "metrics": {t: v["scores"] for t, v in metrics["tasks"].items()},
        # Unsupported facts, degenerate outputs and name coverage (%) per model, with the candidate's interval.
        "faithfulness": {t: {"scores": v["faithfulness"]["scores"], "ci": v["faithfulness"]["ci"]["candidate"]}
                         for t, v in metrics["tasks"].items() if v.get("faithfulness")},
        "report_uri": join(artifact_root, "evaluate", "report.html"),
        "champion_version_evaluated": None if metrics.get("champion_version") is None else str(metrics["champion_version"]),
        "n_eval": metrics.get("n_examples"),
        "example": {"id": example["id"], "reference": example["references"][0], "candidate": example["candidate"],
                    "base": example["base"], "unsupported": example.get("candidate_unsupported") or [],
                    "degenerate": example.get("candidate_degenerate")},
        "registered": registered,
        "artifacts": sorted({u.split(artifact_root + "/")[1].split("/")[0] for u, _ in store.list(artifact_root)}),
        "tracking_uri": cfg.tracking.uri,
    }


def collect_local_summary(cfg: MixtuneConfig, store: Store, artifact_root: str, pipeline_run: str,
                          workdir: Path) -> dict:
    """collect_summary, with the report copied into the state folder (`report`: its local path)."""
    summary = collect_summary(cfg, store, artifact_root, pipeline_run)
    summary["report"] = str(export_report(store, artifact_root, workdir / "reports" / pipeline_run))
    return summary


REPORT_FILES = ("report.html", "metrics.json", "predictions.parquet", "eval_set.parquet")


def export_report(store: Store, artifact_root: str, dest: Path) -> Path:
    """Copy the evaluate step's report, metrics and predictions to a local folder: the embedded S3 server
    (and its per-run keys) stops with the run, a file on disk opens any time. Returns report.html's path."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        uri = join(artifact_root, "evaluate", name)
        if store.exists(uri):
            store.get_file(uri, dest / name)
    return dest / "report.html"


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()

    def say(text: str) -> None:  # one line in a log file; a terminal wraps it at its edge, not mid-phrase
        con.print(text, soft_wrap=True)
    t = Table(title=f"mixtune run {summary['pipeline_run']}")
    for col in ("step", "rows in", "rows out", "quarantined", "duplicates"):
        t.add_column(col, justify="right" if col != "step" else "left")
    for row in summary["rows"]:
        t.add_row(*[str(x) for x in row])
    con.print(t)
    for reason, n in summary["quarantine_reasons"].items():
        say(f"  quarantined: {n} × {reason}")
    files, pii = summary["files"], summary["pii"]
    say(f"  source files: {files['read']} read, {files['reused']} unchanged and reused"
              + (f"; PII redacted: {', '.join(f'{n} {k}' for k, n in pii.items())}" if pii else ""))
    base, replay = summary.get("base_model") or {}, summary.get("replay") or {}
    if base.get("version") or base.get("unset_alias"):
        say(f"  base model: {base['registered_model']} v{base['version']}" if base.get("version") else
                  f"  base model: {base['ref']} ({base['unset_alias']} is not set yet: the first round)")
    if replay.get("from") or replay.get("uri"):
        say(f"  replay: {replay.get('note')}" + (f" ({replay['examples']} examples, ratio {replay['ratio']:g})"
                                                       if replay.get("uri") else ""))
    if summary["mixture"]:
        say("  train mixture weights (sampled at load time): " + ", ".join(f"{t} {p:.1%}" for t, p in summary["mixture"].items()))
    from components.evaluate.summary_table import print_summary_table

    say(f"evaluation: {summary['n_eval']} examples; champion evaluated against: "
              f"{'v' + summary['champion_version_evaluated'] if summary['champion_version_evaluated'] else 'none'}")
    print_summary_table(summary["evaluation"], console=con)
    report = summary.get("report")
    say(f"report: {Path(report).as_uri() if report else summary['report_uri']}")
    if report:
        say(f"  beside it: {', '.join(REPORT_FILES[1:])}")
    ex = summary["example"]
    flags = ([f"unsupported: {', '.join(ex['unsupported'])}"] if ex.get("unsupported") else []) + (
        [f"degenerate: {ex['degenerate']}"] if ex.get("degenerate") else [])
    say(f"example {ex['id']}\n  reference : {ex['reference']}\n  fine-tuned: {ex['candidate']}"
              + (f"\n  checks    : {'; '.join(flags)}" if flags else "") + f"\n  base      : {ex['base'][:120]!r}")
    reg = summary["registered"]
    if reg:
        say(f"registered: {reg['name']} version {reg['version']} aliases {reg['aliases']} — {reg['decision']}")
    say(f"artifacts: {summary['artifact_root']}/{{{','.join(summary['artifacts'])}}}")
    say(f"MLflow: {summary['tracking_uri']}   work folder: {summary['workdir']}   took {summary['seconds']} s")
    workdir = Path(summary["workdir"])
    logs = workdir / "logs" / summary["pipeline_run"]
    if logs.is_dir():
        say(f"step logs: {logs}/")
    say(f"open the runs, the report and the registry in MLflow: mixtune ui --workdir {summary['workdir']}")
