"""Forgetting: train on the multi-task mixture, retrain on new chat logs (TweetSumm) with and without
replay of that mixture, and report per-task and per-source deltas on one frozen evaluation set.

    python benchmarks/forgetting.py [--workdir .mixtune/forgetting] [--steps 600] [--steps-b 150]
        [--examples 96] [--replay-ratio 0.9] [--lr-b 0.001] [--seed 42] [--json out.json] [--keep]

Every stage is the real DAG (pipelines.local.run_local) against one embedded S3 server and one SQLite
MLflow registry under --workdir:
  prep  ingest + templates (the step cores) of both data sets, to freeze the evaluation set: per task
        and per source, the first --examples test examples by id (so every source of a task is scored).
  A     configs/forgetting.yaml, --steps steps: summarization (generated support chats) and
        review_rating (Alexa reviews).
  B1    TweetSumm only, model.base = models:/<name>/<A's version> (from the registry), --steps-b steps at
        --lr-b, no replay.
  B2    the same plus A's train examples replayed at --replay-ratio of the mixture.
All three score on the frozen set (equal eval_set_sha256 is asserted). In B's evaluation the base model
is A, so candidate - base is the forgetting measure; the champion is what the registry holds (A if its
gate promoted it, else none; B2 finds it as B1 did, even if B1's gate promoted B1).
Goal (issue 5): without replay the old summarization sources drop; with replay they drop <= 1 ROUGE-1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components.common.config import MixtuneConfig, load_config  # noqa: E402
from components.evaluate import metrics as M  # noqa: E402
from components.evaluate.evalset import source_of  # noqa: E402 - evaluate's per-source slices use it too

STAGES = ("A", "B1", "B2")
ALL = "(all)"
TOLERANCE = 1.0  # ROUGE-1 points an old summarization source may lose with replay
MARKER = ".forgetting-benchmark"  # only a folder holding it is ever wiped
NEW_SOURCE = {"path": "../shared/datasets/tweetsumm/tweetsumm_*.jsonl", "format": "tweetsumm", "name": "tweetsumm"}


# --- pure helpers (tests/benchmarks/test_forgetting.py) ---------------------------------------------

def freeze_eval_set(rows: list[dict], per_slice: int, tasks: list[str]) -> list[dict]:
    """Per task (in `tasks` order) and per source, the first `per_slice` rows by id."""
    out = []
    for task in tasks:
        mine = sorted((r for r in rows if r["task"] == task), key=lambda r: r["id"])
        for src in sorted({source_of(r["id"]) for r in mine}):
            out += [r for r in mine if source_of(r["id"]) == src][:per_slice]
    return out


def slices(rows: list[dict]) -> dict[tuple[str, str], list[int]]:
    """(task, ALL) then (task, source) -> row positions; a task with one source gets only ALL."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["task"], ALL), []).append(i)
        groups.setdefault((r["task"], source_of(r["id"])), []).append(i)
    counts: dict[str, int] = {}
    for task, src in groups:
        counts[task] = counts.get(task, 0) + (src != ALL)
    return {k: v for k, v in groups.items() if k[1] == ALL or counts[k[0]] > 1}


def score_slices(preds: dict[str, list[dict]], resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0, families: dict[str, str] | None = None) -> list[dict]:
    """One row per slice and metric (the family's primary, plus ROUGE-1 for rouge tasks): each stage's
    score of its `candidate` column with a bootstrap CI, and stage - first stage with a paired CI."""
    names = list(preds)
    first = preds[names[0]]
    for s in names[1:]:
        if [r["id"] for r in preds[s]] != [r["id"] for r in first]:
            raise ValueError(f"stage {s} was scored on other examples (or in another order) than {names[0]}")
    out = []
    for (task, src), idx in slices(first).items():
        family = M.family_of(task, families)
        refs = [list(first[i]["references"]) for i in idx]
        stats = {s: M.example_stats(family, [preds[s][i]["candidate"] for i in idx], refs) for s in names}
        for metric in dict.fromkeys([M.primary_metric(family)] + (["rouge1"] if family == "rouge" else [])):
            row = {"task": task, "slice": src, "n": len(idx), "metric": metric,
                   "lower_is_better": metric in M.lower_is_better(family)}
            for s in names:
                row[s] = {"value": M.aggregate(family, stats[s])[metric],
                          "ci": list(M.bootstrap_ci(family, stats[s], metric, resamples, confidence, seed))}
            for s in names[1:]:
                row[f"{s}-{names[0]}"] = M.paired_delta(family, stats[s], stats[names[0]], metric, resamples,
                                                        confidence, seed)
            out.append(row)
    return out


def goal_verdict(rows: list[dict], new_sources: set[str], tolerance: float = TOLERANCE) -> dict:
    """Issue 5's goal on the old summarization sources' ROUGE-1: B1 drops more than `tolerance`, B2 does not."""
    old = [r for r in rows if r["task"] == "summarization" and r["metric"] == "rouge1"
           and r["slice"] != ALL and r["slice"] not in new_sources]
    if not old:
        raise ValueError("no old summarization source in the evaluation set")
    drops = all(r["B1-A"]["mean"] < -tolerance for r in old)
    holds = all(r["B2-A"]["mean"] >= -tolerance for r in old)
    detail = "; ".join(f"{r['slice']}: B1-A {r['B1-A']['mean']:+.2f}, B2-A {r['B2-A']['mean']:+.2f}" for r in old)
    return {"met": drops and holds, "without_replay_drops": drops, "with_replay_holds": holds,
            "tolerance": tolerance, "detail": detail}


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def ci(c: dict) -> str:
        return f"{c['value']:.2f} [{c['ci'][0]:.1f}, {c['ci'][1]:.1f}]"

    def delta(d: dict, lower: bool) -> str:
        worse = d["mean"] > 0 if lower else d["mean"] < 0
        colour = "red" if worse and abs(d["mean"]) > TOLERANCE else ("green" if not worse else "")
        text = f"{d['mean']:+.2f} [{d['low']:+.1f}, {d['high']:+.1f}]"
        return f"[{colour}]{text}[/]" if colour else text

    table = Table(title=title)
    for col in ("task", "source", "n", "metric", "A", "B1 (no replay)", "B2 (replay)", "B1 - A", "B2 - A"):
        table.add_column(col, justify="left" if col in ("task", "source", "metric") else "right")
    for r in rows:
        lower = r["lower_is_better"]
        table.add_row(r["task"], r["slice"], str(r["n"]), r["metric"], ci(r["A"]), ci(r["B1"]), ci(r["B2"]),
                      delta(r["B1-A"], lower), delta(r["B2-A"], lower))
    Console(width=200).print(table)


# --- running the stages ------------------------------------------------------------------------------

def stage_config(path: Path, overrides: dict) -> MixtuneConfig:
    """The stage-1 config with overrides; source paths made absolute (steps may run elsewhere)."""
    cfg = load_config(path, overrides)
    sources = [s.model_copy(update={"path": str((REPO / s.path).resolve())})
               if s.path != "sample" and not s.path.startswith(("s3://", "/")) else s for s in cfg.data.sources]
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": sources})})


@contextlib.contextmanager
def logged_to(path: Path):
    """Send this process's and its children's stdout/stderr to a file; show the tail if it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            print(f"--- last lines of {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
            raise
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def prepare_examples(cfg: MixtuneConfig, name: str, work: Path) -> str:
    """ingest + templates of cfg's data (the same step cores the DAG runs): the templates prefix."""
    from components.common.storage import Store, join
    from components.common.tracking import finish_parent
    from components.ingest.core import run_ingest
    from components.templates.core import run_templates
    from pipelines.local import stage_sample

    store = Store(cfg.storage)
    root = join(store.root, "runs", name)
    cfg = stage_sample(cfg, store, work)  # the generated chats, as run_local stages them (same seed)
    examples = run_templates(cfg, run_ingest(cfg, root, name).records_uri, root, name).examples_uri
    finish_parent(cfg, name)
    return examples


def pin_champion(cfg: MixtuneConfig, version: str | None) -> str | None:
    """Point `champion` at version (None: no champion) if it is elsewhere; a note saying so, or None."""
    from mlflow.tracking import MlflowClient

    from components.common.registry import CHAMPION, alias_version

    client, name = MlflowClient(), cfg.registry.model_name
    current = alias_version(client, name, CHAMPION)
    if current == version:
        return None
    if version is None:
        client.delete_registered_model_alias(name, CHAMPION)
    else:
        client.set_registered_model_alias(name, CHAMPION, version)
    return (f"champion alias moved from v{current} back to {'v' + version if version else 'none'} (as after stage A), "
            "so that B1 and B2 face the same champion")


def check_subset(frozen: list[dict], produced: list[dict], what: str) -> None:
    """The frozen rows of a data set are exactly what that stage's own templates step wrote."""
    by_id = {r["id"]: (r["inputs"], list(r["references"] or [])) for r in produced}
    bad = [r["id"] for r in frozen if by_id.get(r["id"]) != (r["inputs"], list(r["references"] or []))]
    if bad:
        raise AssertionError(f"{what}: {len(bad)} frozen eval rows differ from its templates test split, e.g. {bad[0]}")


def run_prep_and_a(args, config: Path, over: dict, store, work: Path, progress) -> dict:
    """Freeze the evaluation set, then train and evaluate stage A: the state --keep reuses."""
    from components.common.schemas import EXAMPLE_SCHEMA, read_rows, write_table
    from components.common.storage import join
    from pipelines.local import run_local

    progress("prep: ingest + templates of the stage-1 data and of TweetSumm (logs/prep.log)")
    with logged_to(work / "logs" / "prep.log"):
        old_uri = prepare_examples(stage_config(config, over["A"]), "prep-stage1", work)
        new_uri = prepare_examples(stage_config(config, over["B"]), "prep-tweetsumm", work)
    tasks = stage_config(config, over["A"]).evaluate.tasks
    old = freeze_eval_set(read_rows(store, join(old_uri, "test.parquet")), args.examples, tasks)
    new = freeze_eval_set(read_rows(store, join(new_uri, "test.parquet")), args.examples, ["summarization"])
    write_table(store, over["A"]["evaluate.eval_set_uri"], old + new, EXAMPLE_SCHEMA)
    counts = Counter(f"{r['task']}/{source_of(r['id'])}" for r in old + new)
    progress(f"frozen eval set: {len(old + new)} examples {dict(counts)} -> {over['A']['evaluate.eval_set_uri']}")

    progress(f"stage A: multi-task mixture, {args.steps} steps (logs/A.log)")
    with logged_to(work / "logs" / "A.log"):
        summary = run_local(stage_config(config, over["A"]), work, embedded_s3=False, pipeline_run="forgetting-A")
    check_subset(old, read_rows(store, join(summary["artifact_root"], "templates", "test.parquet")), "stage A")
    reg = summary["registered"] or {}
    progress(f"stage A done in {summary['seconds']} s: v{reg.get('version')}, aliases {reg.get('aliases')}")
    return {"summary": summary, "version": reg.get("version"), "promoted": "champion" in reg.get("aliases", []),
            "model_uri": summary["evaluation"]["model_uri"], "new_rows": new}


def run_b(stage: str, replay: str | None, args, config: Path, over: dict, state: dict, store, work: Path,
          progress) -> dict:
    """A retrained on TweetSumm, with or without replay of A's train examples: its run summary."""
    from components.common.schemas import read_rows
    from components.common.storage import join
    from pipelines.local import run_local

    # Retrain A from the registry, as a team retrains its champion (A's version whether or not promoted).
    name = stage_config(config, over["B"]).registry.model_name
    over = {**over["B"], "model.base": f"models:/{name}/{state['version']}"}
    if replay:
        over |= {"templates.mixture.replay.examples_uri": replay, "templates.mixture.replay.ratio": args.replay_ratio}
    what = f"replay {args.replay_ratio:g} of A's mixture" if replay else "no replay"
    progress(f"stage {stage}: TweetSumm from A's model, {args.steps_b} steps, {what} (logs/{stage}.log)")
    with logged_to(work / "logs" / f"{stage}.log"):
        summary = run_local(stage_config(config, over), work, embedded_s3=False,
                            pipeline_run=f"forgetting-{stage}-{time.strftime('%H%M%S')}")
    check_subset(state["new_rows"], read_rows(store, join(summary["artifact_root"], "templates", "test.parquet")),
                 f"stage {stage}")
    reg = summary["registered"] or {}
    progress(f"stage {stage} done in {summary['seconds']} s: v{reg.get('version')}, aliases {reg.get('aliases')}")
    return summary


def gate_records(summaries: dict[str, dict], model_name: str) -> dict[str, dict]:
    """The gate decision as recorded on each stage's model version in the registry."""
    from mlflow.tracking import MlflowClient

    out = {}
    for s, summary in summaries.items():
        reg = summary["registered"] or {}
        tags = MlflowClient().get_model_version(model_name, reg["version"]).tags if reg.get("version") else {}
        out[s] = {"version": reg.get("version"), "gate": tags.get("mixtune.gate"),
                  "reason": tags.get("mixtune.gate_reason"), "aliases_after_run": reg.get("aliases")}
    return out


def report(args, summaries: dict, preds: dict, gates: dict, notes: list[str], cfg: MixtuneConfig,
           elapsed: float) -> dict:
    shas = {s: summaries[s]["evaluation"]["eval_set_sha256"] for s in STAGES}
    assert len(set(shas.values())) == 1, f"stages were scored on different evaluation sets: {shas}"
    boot = cfg.evaluate.bootstrap
    rows = score_slices(preds, boot.resamples, boot.confidence, boot.seed, cfg.evaluate.metrics)
    for s in STAGES:  # the per-task rows must equal what evaluate recorded for the gate
        for r in (r for r in rows if r["slice"] == ALL):
            got = summaries[s]["evaluation"]["tasks"][r["task"]]["scores"]["candidate"][r["metric"]]
            assert abs(got - r[s]["value"]) < 1e-6, (s, r["task"], r["metric"], got, r[s]["value"])
    n = len(preds["A"])
    same = {s: sum(a["candidate"] == b["base"] for a, b in zip(preds["A"], preds[s])) for s in ("B1", "B2")}
    verdict = goal_verdict(rows, {NEW_SOURCE["name"]})
    command = "python benchmarks/forgetting.py " + shlex.join(sys.argv[1:])
    print(f"\ncommand: {command}")
    print(f"eval set: {n} examples, sha256 {shas['A'][:16]}, identical for A, B1, B2; A {args.steps} steps, "
          f"B {args.steps_b} steps, replay ratio {args.replay_ratio:g}, seed {args.seed}; "
          f"{boot.confidence:.0%} bootstrap CIs ({boot.resamples} resamples), deltas paired")
    print(f"B1/B2 'base' outputs identical to A's own: B1 {same['B1']}/{n}, B2 {same['B2']}/{n}")
    print_table(rows, "Forgetting: A = multi-task model; B = A retrained on TweetSumm (B1 no replay, B2 replay)")
    for s in STAGES:
        g = gates[s]
        print(f"gate on {s} (v{g['version']}, aliases after its run {g['aliases_after_run']}): {g['reason']}")
    for note in notes:
        print(note)
    print(f"goal (old summarization sources: without replay drop > {TOLERANCE:g} ROUGE-1, with replay drop "
          f"<= {TOLERANCE:g}): {'MET' if verdict['met'] else 'NOT MET'}; without replay drops: "
          f"{verdict['without_replay_drops']}, with replay holds: {verdict['with_replay_holds']} ({verdict['detail']})")
    print(f"total {elapsed:.0f} s; pipeline seconds: " + ", ".join(f"{s} {summaries[s]['seconds']}" for s in STAGES))
    return {"command": command, "args": vars(args), "eval_set_sha256": shas["A"], "n_examples": n, "rows": rows,
            "goal": verdict, "gates": gates, "notes": notes, "same_base_outputs": same,
            "runs": {s: {k: summaries[s][k] for k in ("pipeline_run", "artifact_root", "seconds")} for s in STAGES}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=".mixtune/forgetting")
    p.add_argument("--config", default="configs/forgetting.yaml", help="the stage-1 (multi-task) config")
    p.add_argument("--steps", type=int, default=600, help="stage A training steps")
    p.add_argument("--steps-b", type=int, default=150, help="stage B1/B2 training steps (the same for both)")
    p.add_argument("--examples", type=int, default=96, help="frozen eval examples per task and source")
    p.add_argument("--replay-ratio", type=float, default=0.9, help="B2: share of the mixture replayed from A")
    p.add_argument("--lr-b", type=float, default=0.001,
                   help="stage B1/B2 learning rate: continued training from A takes smaller steps than A (0.005)")
    p.add_argument("--seed", type=int, default=42, help="train.seed of every stage")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--keep", action="store_true", help="reuse prep and stage A from --workdir when present")
    args = p.parse_args()
    print("command: python benchmarks/forgetting.py " + shlex.join(sys.argv[1:]), flush=True)
    # A plain SIGTERM would skip the `with` blocks and leave the S3 server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work, config = (REPO / args.workdir).resolve(), (REPO / args.config).resolve()
    state_file, key = work / "stage_a.json", {k: getattr(args, k) for k in ("config", "steps", "examples", "seed")}
    state = json.loads(state_file.read_text()) if args.keep and state_file.exists() else None
    if state is not None and state["key"] != key:
        print(f"--keep: {state_file} was made with {state['key']}, not {key}: starting over", flush=True)
        state = None
    if state is None and work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            raise SystemExit(f"{work} is not empty and was not made by this benchmark: choose another --workdir")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).touch()
    os.environ.setdefault("MIXTUNE_CACHE", str(work / "cache"))  # model downloads stay in the work folder

    from components.common import tracking
    from components.common.schemas import read_rows
    from components.common.storage import Store, join
    from pipelines.local import local_services

    started = time.time()

    def progress(msg: str) -> None:
        print(f"[{time.time() - started:7.1f} s] {msg}", flush=True)

    common = {"train.seed": args.seed, "tracking.uri": f"sqlite:///{work / 'mlflow.db'}"}
    base_cfg = stage_config(config, common)
    with local_services(base_cfg, work) as cfg0:
        tracking.setup(cfg0)
        store = Store(cfg0.storage)
        common |= {"storage.endpoint_url": cfg0.storage.endpoint_url, "tracking.uri": cfg0.tracking.uri,
                   "evaluate.eval_set_uri": join(store.root, "forgetting", "eval_set.parquet"),
                   # evaluate keeps the first max_examples per task: let it keep the whole frozen set.
                   "evaluate.max_examples": args.examples * (len(base_cfg.data.sources) + 1)}
        over = {"A": {**common, "train.max_steps": args.steps, "train.warmup_steps": max(1, args.steps // 10)},
                "B": {**common, "train.max_steps": args.steps_b, "train.warmup_steps": max(1, args.steps_b // 10),
                      "templates.tasks": ["summarization"], "data.sources": [NEW_SOURCE]}}
        if args.lr_b is not None:
            over["B"]["train.learning_rate"] = args.lr_b
        if state is None:
            state = {"key": key, **run_prep_and_a(args, config, over, store, work, progress)}
            state_file.write_text(json.dumps(state, default=str))
        else:
            progress(f"--keep: reusing prep and stage A ({state['summary']['pipeline_run']}, v{state['version']})")
        summaries, notes = {"A": state["summary"]}, []
        a_templates = join(state["summary"]["artifact_root"], "templates")
        for stage, replay in (("B1", None), ("B2", a_templates)):
            note = pin_champion(cfg0, state["version"] if state["promoted"] else None)
            if note:
                notes.append(f"before {stage}: {note}")
                progress(note)
            summaries[stage] = run_b(stage, replay, args, config, over, state, store, work, progress)
        preds = {s: read_rows(store, join(summaries[s]["artifact_root"], "evaluate", "predictions.parquet"))
                 for s in STAGES}
        gates = gate_records(summaries, cfg0.registry.model_name)
    result = report(args, summaries, preds, gates, notes, base_cfg, time.time() - started)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
