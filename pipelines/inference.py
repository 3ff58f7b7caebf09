"""The batch inference pipeline: ingest -> infer, from the same config as the training DAG.

Ingest reads `data.sources` (new chat logs; incremental, so files seen before are reused, not re-read)
into a dataset version; infer summarizes its dialogues with `models:/<registry.model_name>@<infer.model>`
and writes the summaries to <artifact_root>/infer. Locally it runs through kfp.local with the same
embedded S3 server and SQLite MLflow as `mixtune run --local`, so it finds the champion that run made.
No `from __future__ import annotations` here: KFP reads the pipeline's real type annotations.
"""
from pathlib import Path

from kfp import dsl

from components.common.config import MixtuneConfig
from components.common.storage import Store, join
from components.infer import component as infer_c
from components.ingest import component as ingest_c
from pipelines.dag import with_cluster_credentials
from pipelines.local import new_run_name, run_dag_locally

PIPELINE_NAME = "mixtune-infer"


def build_inference_pipeline(cfg: MixtuneConfig):
    """The pipeline function, with each step bound to its configured image."""
    ingest_op = ingest_c.build(cfg.images.cpu)
    infer_op = infer_c.build(cfg.images.cpu)

    @dsl.pipeline(name=PIPELINE_NAME, description="Summarize new chat logs with the registered champion")
    def mixtune_infer(config_json: str, pipeline_run: str, artifact_root: str = ""):
        common = dict(config_json=config_json, pipeline_run=pipeline_run, artifact_root=artifact_root)
        ingest = ingest_op(**common).set_display_name("ingest")
        # Its real input is the bucket's content, which KFP cannot see: new files must be read.
        ingest.set_caching_options(False)
        infer = infer_op(**common, records_uri=ingest.outputs["records_uri"]).set_display_name("infer")
        # The alias may have moved since a cached run: the registry is an input KFP cannot see.
        infer.set_caching_options(False)
        for task in (ingest, infer):
            with_cluster_credentials(task, cfg)

    return mixtune_infer


def compile_inference(cfg: MixtuneConfig, output: str) -> str:
    from kfp import compiler

    compiler.Compiler().compile(build_inference_pipeline(cfg), package_path=output)
    return output


def new_infer_run_name() -> str:
    return new_run_name().replace("mixtune-", "mixtune-infer-", 1)


def run_local(cfg: MixtuneConfig, workdir: str | Path = ".mixtune", embedded_s3: bool = True,
              pipeline_run: str | None = None, verbose: bool = True) -> dict:
    """Run ingest -> infer locally (kfp.local) and return the summary (see collect_inference_summary)."""
    return run_dag_locally(cfg, workdir, embedded_s3, pipeline_run or new_infer_run_name(),
                           build_inference_pipeline, collect_inference_summary, PIPELINE_NAME, verbose=verbose)


def collect_inference_summary(cfg: MixtuneConfig, store: Store, artifact_root: str, pipeline_run: str) -> dict:
    """What a person wants to know after an inference run, read back from S3."""
    from components.common.schemas import read_rows

    ingest = store.get_json(join(artifact_root, "ingest", "report.json"))
    manifest = store.get_json(join(artifact_root, "infer", "manifest.json"))
    examples = read_rows(store, join(artifact_root, "infer", "summaries.parquet"))[:3]
    return {
        "pipeline_run": pipeline_run,
        "artifact_root": artifact_root,
        "dataset_version": ingest["dataset_version"],
        "ingest": {k: ingest["counts"][k] for k in ("rows_read", "rows_kept", "rows_quarantined", "rows_duplicate")},
        "quarantine_reasons": ingest.get("quarantine_reasons", {}),
        "model": manifest["model"],
        "counts": manifest["counts"],
        "skipped_reasons": manifest["skipped_reasons"],
        "summaries_uri": join(artifact_root, "infer", "summaries.parquet"),
        "summaries_per_second": manifest["summaries_per_second"],
        "examples": [{k: e[k] for k in ("id", "summary")} for e in examples],
        "tracking_uri": cfg.tracking.uri,
    }


def print_inference_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    m = summary["model"]
    t = Table(title=f"mixtune infer {summary['pipeline_run']}: {m['name']} v{m['version']} ({m['requested']})")
    for col in ("step", "in", "out", "skipped / quarantined", "duplicates"):
        t.add_column(col, justify="left" if col == "step" else "right")
    i, c = summary["ingest"], summary["counts"]
    t.add_row("ingest (rows)", str(i["rows_read"]), str(i["rows_kept"]), str(i["rows_quarantined"]),
              str(i["rows_duplicate"]))
    t.add_row("infer (records)", str(c["read"]), str(c["summarized"]), str(c["skipped"]), "0")
    con.print(t)
    for kind in ("quarantine", "skipped"):
        for reason, n in summary[f"{kind}_reasons"].items():
            con.print(f"  {kind}: {n} × {reason}", markup=False)
    con.print(f"  {summary['summaries_per_second']} summaries/s; summaries → {summary['summaries_uri']}", markup=False)
    for e in summary["examples"]:
        con.print(f"  {e['id']}: {e['summary']}", markup=False)  # model text: never rich markup
