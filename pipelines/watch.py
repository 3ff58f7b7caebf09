"""`mixtune watch`: the embedded default's stand-in for the Argo Events trigger.

It lists the watched sources in the state folder's S3 every `cluster.trigger.poll_seconds`; when new
files appear it waits for the uploads to settle, claims the batch with the claim `mixtune submit
--if-new-data` uses (pipelines/trigger.py) and runs the DAG locally. A claimed batch is never run again,
by this watcher or another one on the same bucket: a failed run stays FAILED in its claim until a person
deletes the claim object.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

from components.common.config import MixtuneConfig
from components.common.registry import CHAMPION
from components.common.storage import Store
from pipelines.local import run_local
from pipelines.trigger import (Batch, TriggerError, batch_config, claim, claims_root, next_batch, release,
                               run_name_for, update_claim, watched)

RunFn = Callable[[MixtuneConfig], dict]


def describe(cfg: MixtuneConfig, store: Store) -> str:
    """What the watcher looks at, for the line it prints when it starts."""
    t = cfg.cluster.trigger
    paths = ", ".join(cfg.data.sources[i].path for i in watched(cfg))
    mode = "only files no earlier run claimed" if t.new_files_only else "every file of every source"
    return (f"mixtune watch: {paths} every {t.poll_seconds:g} s (settle {t.settle_seconds:g} s); a run reads "
            f"{mode}; claims in {claims_root(cfg, store)}/")


def check_watchable(cfg: MixtuneConfig) -> None:
    # The generated sample is made by the run itself: no upload ever lands there.
    sample = [i for i in watched(cfg) if cfg.data.sources[i].path == "sample"]
    if sample:
        raise TriggerError(f"data.sources[{sample[0]}] is the generated `sample`: there is nothing to watch; "
                           "name the s3:// prefix uploads land in, or leave it out of cluster.trigger.watch_sources")


def _result(summary: dict) -> dict:
    """What the claim keeps of a finished run's summary (pipelines/summary.py)."""
    reg = summary.get("registered") or {}
    out = {k: summary[k] for k in ("dataset_version", "seconds") if k in summary}
    if reg:
        out["registered_version"] = reg.get("version")
        out["promoted"] = bool(reg.get("new")) and CHAMPION in (reg.get("aliases") or [])
    return out


def _files(n: int) -> str:
    return f"{n} file{'' if n == 1 else 's'}"


def _one_line(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip() or type(error).__name__
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:400] + "…"


def run_batch(cfg: MixtuneConfig, store: Store, batch: Batch, run_fn: RunFn | None, workdir: str | Path,
              log: Callable[[str], None], verbose: bool = True) -> dict | None:
    """Claim the batch and run it; the run's record, or None when another watcher holds it."""
    n = _files(len(batch.files))
    name = run_name_for(batch.fingerprint) if run_fn is None else None  # a given run_fn names its own run
    if not claim(store, batch, {"runner": "mixtune watch", "status": "RUNNING", "run_name": name}):
        log(f"batch {batch.fingerprint[:8]} ({n}): claimed by another watcher; skipped")
        return None
    try:
        run_cfg = batch_config(cfg, batch)
    except Exception:
        release(store, batch)  # nothing started: the batch is free for the next look
        raise
    # The default reuses the S3 server the caller started (embedded_s3=False), under the claim's run name.
    run = run_fn or (lambda c: run_local(c, workdir, embedded_s3=False, pipeline_run=name, verbose=verbose))
    record = {"run_name": name, "fingerprint": batch.fingerprint, "files": [o.name for o in batch.files]}
    try:
        summary = run(run_cfg)
    except Exception as e:
        record.update(status="FAILED", error=_one_line(e))
    except BaseException:  # Ctrl-C or SIGTERM mid-run: the claim says so, then the watcher stops
        update_claim(store, batch, {**record, "status": "INTERRUPTED", "finished_at": time.time()})
        log(f"{name or batch.fingerprint[:8]}: INTERRUPTED on {n}; not retried: delete {batch.claim_uri} "
            "to run this batch again")
        raise
    else:
        summary = summary if isinstance(summary, dict) else {}
        record.update(status="FINISHED", run_name=summary.get("pipeline_run", name), **_result(summary))
    update_claim(store, batch, {**record, "finished_at": time.time()})
    record["claim_uri"] = batch.claim_uri
    label = record["run_name"] or batch.fingerprint[:8]
    if record["status"] == "FAILED":
        log(f"{label}: FAILED on {n}: {record['error']}; not retried: delete {batch.claim_uri} "
            "to run this batch again")
    else:
        reg = (f", registered v{record['registered_version']}"
               f"{' (champion)' if record.get('promoted') else ''}" if record.get("registered_version") else "")
        log(f"{label}: FINISHED on {n}{reg}")
    return record


def watch(cfg: MixtuneConfig, workdir: str | Path, run_fn: RunFn | None = None, once: bool = False,
          max_runs: int | None = None, sleep: Callable[[float], None] = time.sleep,
          log: Callable[[str], None] = print, verbose: bool = True) -> list[dict]:
    """Run the DAG on each new batch until Ctrl-C (or after one look with once, or max_runs runs); the
    runs' records. The local services must be up: the caller holds pipelines.local.local_services, and
    run_fn (default: run_local on the running S3 server) gets the batch's config."""
    check_watchable(cfg)
    store = Store(cfg.storage)
    records: list[dict] = []
    last_error = None
    try:
        while True:
            try:
                batch = next_batch(cfg, store, sleep)
                last_error = None
            except TriggerError as e:  # e.g. the prefix has no upload yet: said once, then polled again
                if str(e) != last_error:
                    log(f"mixtune watch: {e}")
                last_error, batch = str(e), None
            if batch is not None:
                record = run_batch(cfg, store, batch, run_fn, workdir, log, verbose)
                if record is not None:
                    records.append(record)
            if once or (max_runs is not None and len(records) >= max_runs):
                return records
            sleep(cfg.cluster.trigger.poll_seconds)
    except KeyboardInterrupt:
        log(f"mixtune watch: stopped ({len(records)} runs)")
        return records
