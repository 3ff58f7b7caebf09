"""Demo quality over seeds: run the `make demo` config once per train.seed, each in a fresh work folder (no
champion, its own S3 and MLflow DB), and check issue 18's goal for the demo's candidate model.

    python benchmarks/demo_quality.py [--config configs/demo.yaml] [--seeds 42 7 13] [--set KEY=VALUE ...]
        [--workdir DIR] [--keep] [--json out.json]

Each seed is the real DAG (pipelines.local.run_local, as `mixtune run --local` runs it) with
train.seed = the seed; --set overrides pass through as with `mixtune run --set`. Per seed: ROUGE-L and
ROUGE-1 of the candidate on the demo's evaluation set, the final train loss (the train step's MLflow run),
the pipeline's seconds (what `mixtune run` prints as `took`), and, when metrics.json has them, the
candidate's unsupported-fact and degenerate-output rates (components/evaluate/faithfulness.py).
Goal (issue 18): every seed reaches ROUGE-L >= 35, unsupported <= 10 %, degenerate <= 2 %, took <= 420 s.
Timing depends on the machine's load: the load average before and after each run is printed with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))

from components.common.config import load_config  # noqa: E402
from forgetting import logged_to  # noqa: E402 - output to a log file, its tail shown on failure

GOAL = {"rougeL": (">=", 35.0), "unsupported": ("<=", 10.0), "degenerate": ("<=", 2.0), "seconds": ("<=", 420.0)}
COLUMNS = ("rougeL", "rouge1", "unsupported", "degenerate", "final_loss", "seconds")


# --- pure helpers -----------------------------------------------------------------------------------

def parse_sets(pairs: list[str]) -> dict:
    """`a.b=c` pairs -> overrides, values read as YAML (as `mixtune run --set` reads them)."""
    import yaml

    out = {}
    for kv in pairs:
        if "=" not in kv:
            raise SystemExit(f"--set {kv!r}: expected KEY=VALUE")
        key, value = kv.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def row_from(summary: dict, task: str = "summarization") -> dict:
    """One seed's figures from a run summary: candidate ROUGE, faithfulness rates (None if not recorded)."""
    t = summary["evaluation"]["tasks"][task]
    rouge = t["scores"]["candidate"]
    faithful = ((t.get("faithfulness") or {}).get("scores") or {}).get("candidate") or {}
    return {"rougeL": rouge["rougeL"], "rouge1": rouge["rouge1"], "unsupported": faithful.get("unsupported"),
            "degenerate": faithful.get("degenerate"), "seconds": summary["seconds"],
            "eval_set": summary["evaluation"].get("eval_set_sha256", "")[:12]}


def verdict(rows: list[dict]) -> tuple[bool, list[str]]:
    """Met when every seed meets every bound; a bound with no figure (faithfulness not recorded) is unmet."""
    met, parts = True, []
    for key, (op, bound) in GOAL.items():
        values = [r.get(key) for r in rows]
        if any(v is None for v in values):
            met = False
            parts.append(f"{key} {op} {bound:g}: not recorded")
            continue
        worst = min(values) if op == ">=" else max(values)
        ok = worst >= bound if op == ">=" else worst <= bound
        met &= ok
        parts.append(f"{key} {op} {bound:g}: worst {worst:.2f} {'ok' if ok else 'FAILS'}")
    return met, parts


def fmt(v, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict]) -> None:
    heads = ("seed",) + COLUMNS + ("load before/after", "eval set")
    lines = [[str(r["seed"])] + [fmt(r.get(c), 3 if c == "final_loss" else 2) for c in COLUMNS] + [r.get("load", ""), r.get("eval_set", "")]
             for r in rows]
    for label, pick in (("mean", lambda v: sum(v) / len(v)), ("min", min), ("max", max)):
        lines.append([label] + [fmt(pick(vs), 3 if c == "final_loss" else 2) if (vs := [r[c] for r in rows if r.get(c) is not None]) else "—"
                                for c in COLUMNS] + ["", ""])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(heads)]
    print("  ".join(h.rjust(w) for h, w in zip(heads, widths)))
    for line in lines:
        print("  ".join(x.rjust(w) for x, w in zip(line, widths)))


# --- running ----------------------------------------------------------------------------------------

def final_loss(tracking_uri: str, pipeline_run: str) -> float | None:
    """The train step's final loss, from its MLflow run in this seed's own database."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"tags.`mixtune.pipeline_run` = '{pipeline_run}' and tags.`mixtune.step` = 'train'")
    return runs[0].data.metrics.get("final_loss") if runs else None


def run_seed(config: Path, overrides: dict, seed: int, work: Path, log: Path) -> dict:
    from pipelines.local import run_local

    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"  # this seed's own registry: no champion, nothing shared
    cfg = load_config(config, {**overrides, "train.seed": seed, "tracking.uri": tracking_uri})
    load = f"{os.getloadavg()[0]:.1f}"
    try:
        with logged_to(log):
            summary = run_local(cfg, work)
    except BaseException:
        print(f"--- last lines of {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        raise
    row = {"seed": seed, **row_from(summary), "final_loss": final_loss(tracking_uri, summary["pipeline_run"]),
           "load": f"{load}/{os.getloadavg()[0]:.1f}"}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 13], help="train.seed of each run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--workdir", help="parent of the per-seed work folders (default: a new temp folder)")
    p.add_argument("--keep", action="store_true", help="keep each seed's work folder (S3 data, MLflow DB, logs)")
    p.add_argument("--json", help="write the rows and the verdict here")
    args = p.parse_args()
    command = "python benchmarks/demo_quality.py " + shlex.join(sys.argv[1:])
    print(f"command: {command}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the `with` blocks: stop the S3 server
    config, overrides = (REPO / args.config).resolve(), parse_sets(args.set)
    root = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="demo-quality-"))
    rows = []
    for seed in args.seeds:
        work = root / f"seed-{seed}"
        if work.exists():
            raise SystemExit(f"{work} exists: each seed needs a fresh work folder")
        log = root / f"seed-{seed}.log"
        print(f"seed {seed}: {work} (log {log}), load average {os.getloadavg()[0]:.1f}", flush=True)
        rows.append(run_seed(config, overrides, seed, work, log))
        r = rows[-1]
        print(f"seed {seed}: rougeL {r['rougeL']:.2f}, took {r['seconds']} s, unsupported {fmt(r['unsupported'])}, "
              f"degenerate {fmt(r['degenerate'])}", flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.config} with {overrides or 'no overrides'}; {len(rows)} seeds, candidate on the demo's eval set")
    print_table(rows)
    met, parts = verdict(rows)
    print(f"goal (every seed: rougeL >= 35, unsupported <= 10 %, degenerate <= 2 %, took <= 420 s): "
          f"{'MET' if met else 'NOT MET'}; " + "; ".join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "overrides": overrides, "rows": rows,
                                               "goal_met": met, "goal": parts}, indent=2))


if __name__ == "__main__":
    main()
