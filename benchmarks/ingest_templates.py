"""Ingest + template expansion over every source in a config (default: configs/multitask.yaml, i.e. all
of ../shared/datasets that a task uses, plus generated support chats), on a real local S3 server.

    python benchmarks/ingest_templates.py [--config configs/multitask.yaml] [--workers N]

Prints rows/s per stage and the wall time of ingest + templates (goal: under 60 s on 2 cores), then
re-runs ingest with nothing new to show what incremental ingest costs. Per-stage rates inside the parse
workers are per core (CPU seconds summed over files); the other stages are wall-clock.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from components.common.config import load_config  # noqa: E402
from components.common.schemas import SPLITS, EXAMPLE_SCHEMA, read_records, write_table  # noqa: E402
from components.common.storage import Store, join  # noqa: E402
from components.ingest.core import write_dataset  # noqa: E402
from components.templates.core import build_examples, registry_for  # noqa: E402
from pipelines.embedded import LocalS3  # noqa: E402
from pipelines.local import patched_environ, stage_sample  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "multitask.yaml"))
    p.add_argument("--workers", type=int, default=0, help="parse processes (0 = one per core)")
    args = p.parse_args()
    os.chdir(REPO)  # the config's paths are relative to the repository root
    con = Console()
    with tempfile.TemporaryDirectory() as tmp, LocalS3(Path(tmp) / "s3") as s3, patched_environ(s3.env()):
        cfg = load_config(args.config, {"data.workers": args.workers,
                                        "storage.endpoint_url": s3.endpoint, "storage.bucket": "bench"})
        store = Store(cfg.storage)
        store.ensure_bucket()
        cfg = stage_sample(cfg, store, Path(tmp))
        root = join(store.root, "runs", "bench")

        t0 = time.perf_counter()
        ingest = write_dataset(cfg, root, store)
        t1 = time.perf_counter()
        registry = registry_for(cfg, store)
        records = {s: read_records(store, join(ingest.records_uri, f"{s}.parquet")) for s in SPLITS}
        t2 = time.perf_counter()
        examples, mixture, unused = build_examples(cfg, records, registry)
        t3 = time.perf_counter()
        for s in SPLITS:
            write_table(store, join(root, "templates", f"{s}.parquet"), examples[s], EXAMPLE_SCHEMA)
        t4 = time.perf_counter()
        again = write_dataset(cfg, join(store.root, "runs", "bench-2"), store)
        t5 = time.perf_counter()

    c = ingest.counts
    cpu = Counter(ingest.seconds)
    n_examples = sum(len(v) for v in examples.values())
    n_records = c["records_kept"]
    t = Table(title=f"ingest + templates: {len(cfg.data.sources)} sources, {c['rows_read']} source rows "
                    f"({os.cpu_count()} cores, {cfg.data.workers or os.cpu_count()} parse workers)")
    for col in ("stage", "rows", "seconds", "rows/s", "clock"):
        t.add_column(col, justify="left" if col in ("stage", "clock") else "right")
    rows = [
        ("read source files", c["rows_read"], cpu["cpu_read"], "CPU, summed"),
        ("parse + validate", c["rows_read"], cpu["cpu_parse"], "CPU, summed"),
        ("PII redaction", c["rows_read"], cpu["cpu_pii"], "CPU, summed"),
        ("dedup keys (hash + MinHash)", c["rows_read"], cpu["cpu_dedup_keys"], "CPU, summed"),
        ("parse stage (parallel)", c["rows_read"], ingest.seconds["parse"], "wall"),
        ("dedup (LSH) + split", c["rows_read"], ingest.seconds["dedup_split"], "wall"),
        ("write dataset + report", n_records, ingest.seconds["write"], "wall"),
        ("ingest total", c["rows_read"], t1 - t0, "wall"),
        ("templates: read records", n_records, t2 - t1, "wall"),
        ("templates: expand + mix", n_records, t3 - t2, "wall"),
        ("templates: write examples", n_examples, t4 - t3, "wall"),
        ("ingest + templates", c["rows_read"], t4 - t0, "wall"),
        ("re-run ingest, nothing new", again.counts["rows_read"], t5 - t4, "wall"),
    ]
    for stage, n, sec, clock in rows:
        t.add_row(stage, str(n), f"{sec:.2f}", f"{n / sec:,.0f}" if sec > 0 else "-", clock)
    con.print(t)
    con.print(f"rows: read {c['rows_read']} = kept {c['rows_kept']} + quarantined {c['rows_quarantined']} "
              f"+ duplicates {c['rows_duplicate']} (id {c['duplicates_id']}, exact {c['duplicates_exact']}, "
              f"near {c['duplicates_near']})")
    con.print(f"quarantine reasons: {ingest.quarantine_reasons}")
    con.print(f"PII redacted: {ingest.pii}")
    con.print(f"examples: {({s: len(v) for s, v in examples.items()})}; records used by no task: {unused['count']}")
    con.print("train mixture: " + ", ".join(
        f"{task} {v['count']} ({v['proportion']:.1%}, {v['epochs']:.2f} epochs)" for task, v in mixture["tasks"].items()))
    con.print(f"re-run: {len(again.files_read)} files read {again.files_read}, {len(again.files_reused)} reused, "
              f"same version: {again.dataset_version == ingest.dataset_version}")
    verdict = "meets" if t4 - t0 < 60 else "MISSES"
    con.print(f"ingest + templates took {t4 - t0:.1f} s: {verdict} the 60 s goal.  "
              f"command: python benchmarks/ingest_templates.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
