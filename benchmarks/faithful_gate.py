"""The gate refusing unfaithful models that ROUGE would let through, with real training (issue 18).

    python benchmarks/faithful_gate.py [--workdir .mixtune/faithful-gate] [--config configs/demo.yaml]
        [--degenerate-steps 40] [--json out.json]

Three runs of the real DAG (`mixtune run --local`), each in its own state folder (no champion, so each
is a first model judged against the untrained base):
  honest     the config as it is: the generated chats with their true summaries;
  swapped    the same chats, but every summary's names, amounts and numbers replaced by other values of
             the generator (what a team's export with mixed-up summaries would teach): ROUGE-L close to
             the honest model's, facts wrong;
  degenerate the honest data trained for only --degenerate-steps steps: it loops or stops early.
Goal: honest promoted; swapped refused with the unsupported-fact check failing; degenerate refused
with the degenerate-output check failing, the base declared unusable.
Prints a table (ROUGE-L, unsupported %, degenerate %, verdict, failed checks) and a `goal` line.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.sample_data import AGENTS, FIRST, LAST, generate  # noqa: E402

NAMES = FIRST + LAST + AGENTS


def swap_facts(summary: str, rng: random.Random) -> str:
    """Each name becomes another of the generator's names, each number another number of as many digits."""
    summary = re.sub(r"\b(" + "|".join(NAMES) + r")\b",
                     lambda m: rng.choice([n for n in NAMES if n != m.group(0)]), summary)
    return re.sub(r"\d+", lambda m: str(rng.randint(10 ** (len(m.group(0)) - 1), 10 ** len(m.group(0)) - 1)),
                  summary)


def write_swapped(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w") as f:
        for row in generate(n, seed):
            f.write(json.dumps({**row, "summary": swap_facts(row["summary"], rng)}) + "\n")


def run(name: str, work: Path, config: Path, extra: list[str]) -> dict:
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    out = folder / "summary.json"
    cmd = [str(REPO / ".venv" / "bin" / "mixtune"), "run", "--local", "--config", str(config), "--workdir",
           str(folder / "state"), "--summary-json", str(out), *extra]
    start = time.perf_counter()
    with (folder / "run.log").open("w") as log:
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "\n".join((folder / "run.log").read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{name}: `{' '.join(cmd)}` failed ({rc}):\n{tail}")
    summary = json.loads(out.read_text())
    summary["wall_seconds"] = time.perf_counter() - start
    return summary


def row_of(name: str, summary: dict) -> dict:
    ev = summary["evaluation"]
    task = ev["tasks"][ev["primary_task"]]
    f = task["faithfulness"]["scores"]["candidate"]
    gate = ev["gate"]
    return {"run": name, "rougeL": task["scores"]["candidate"]["rougeL"], "unsupported": f["unsupported"],
            "degenerate": f["degenerate"], "name_coverage": f["name_coverage"],
            "base_degenerate": task["faithfulness"]["scores"]["base"]["degenerate"], "promote": gate["promote"],
            "failed": [c["name"] for c in gate["checks"] if not c["passed"]],
            "seconds": summary["wall_seconds"]}


def goal(rows: dict[str, dict]) -> tuple[bool, str]:
    h, s, d = rows["honest"], rows["swapped"], rows["degenerate"]
    parts = {
        "honest promoted": h["promote"],
        "swapped refused on unsupported facts": not s["promote"] and any("unsupported" in c for c in s["failed"]),
        "degenerate refused on degenerate outputs": not d["promote"] and any("degenerate" in c for c in d["failed"]),
    }
    return all(parts.values()), "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in parts.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=REPO / ".mixtune" / "faithful-gate")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    ap.add_argument("--degenerate-steps", type=int, default=40)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from components.common.config import load_config

    cfg = load_config(args.config)
    args.workdir.mkdir(parents=True, exist_ok=True)
    swapped = args.workdir / "swapped-chatlogs.jsonl"
    write_swapped(swapped, cfg.data.sample.conversations, cfg.data.sample.seed)
    rows = {}
    for name, extra in (("honest", []), ("swapped", ["--data", str(swapped), "--format", "chatlog"]),
                        ("degenerate", ["--set", f"train.max_steps={args.degenerate_steps}",
                                        "--set", f"train.warmup_steps={max(1, args.degenerate_steps // 10)}"])):
        print(f"{name}: running (log {args.workdir / name / 'run.log'})", flush=True)
        rows[name] = row_of(name, run(name, args.workdir, args.config, extra))
        r = rows[name]
        print(f"{name:10s} rougeL {r['rougeL']:6.2f}  unsupported {r['unsupported']:5.1f}%  degenerate "
              f"{r['degenerate']:5.1f}%  names {r['name_coverage']:5.1f}%  base degenerate {r['base_degenerate']:5.1f}%"
              f"  {'promote' if r['promote'] else 'keep'}  failed: {', '.join(r['failed']) or '-'}  "
              f"({r['seconds']:.0f} s)", flush=True)
    met, detail = goal(rows)
    print(f"goal {'MET' if met else 'NOT MET'}: {detail}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
