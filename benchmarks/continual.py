"""The retraining loop over rounds: new chat logs arrive, `mixtune watch` runs the DAG, the gate decides.

    python benchmarks/continual.py [--workdir .mixtune/continual] [--first-steps 1000] [--steps N] [--reviews 600]
        [--lr 0.002] [--replay-ratio 0.5] [--json out.json] [--no-baseline] [--from-r0 EARLIER_WORKDIR]
        [--public-summaries N]

configs/continual.yaml, two watched sources and the Alexa reviews as public task data, one embedded S3 server
and one SQLite registry per arm:
  R0   generated support chats (the first round: model.initial_base, nothing to replay);
  R1   TweetSumm batch 1 (the champion retrained, replaying what it was trained on);
  P    a poisoned batch: TweetSumm conversations with each other's summaries (must be refused);
  R2, R3  TweetSumm batches 2 and 3.
The baseline arm starts from a copy of the state after R0 and runs R1..R3 with replay off (replay.from: null).
Each round uploads its file to the incoming prefix and calls the watcher once (pipelines/watch.py).
Scored against the first champion (R0) on the examples both were scored on, from evaluate's predictions:
ROUGE-1 per summarization source, accuracy for review ratings, with paired bootstrap intervals.
Goals (issue 19): every honest round promoted; no old source of the champion loses more than 1 point
against R0 over three rounds; TweetSumm gains at least half of what the same rounds gain without replay;
the poisoned round refused with the champion unchanged; without replay the old sources visibly drop.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.continual_batches import (ALEXA, DIALOGSUM, cut_batches, lines_subset, poison,  # noqa: E402
                                          read_tweetsumm, reviews_subset, write_lines)
from benchmarks.continual_score import goal_verdict, print_rounds, score_against_first  # noqa: E402
from benchmarks.forgetting import logged_to  # noqa: E402
from components.common.config import MixtuneConfig, load_config  # noqa: E402

MARKER = ".continual-benchmark"  # only a folder holding it is ever wiped
R0_STATE = "r0-state"  # the replay arm's S3 data and registry right after R0, for --from-r0
CHATS = {"path": "s3://mixtune/incoming/chatlogs/", "format": "chatlog", "name": "chats"}
TWEETS = {"path": "s3://mixtune/incoming/tweetsumm/", "format": "tweetsumm", "name": "tweetsumm"}
ALEXA_SRC = {"path": "s3://mixtune/public/alexa/", "format": "amazon_alexa", "name": "alexa"}
DIALOGSUM_SRC = {"path": "s3://mixtune/public/dialogsum/", "format": "dialogsum", "name": "dialogsum"}


def arm_config(args, workdir: Path, replay: bool) -> MixtuneConfig:
    """configs/continual.yaml with the benchmark's sources, its own registry file and the round knobs."""
    over = {
        "data.sources": [CHATS, TWEETS, ALEXA_SRC] + ([DIALOGSUM_SRC] if args.public_summaries else []),
        "cluster.trigger.watch_sources": ["chats", "tweetsumm"],
        "cluster.trigger.settle_seconds": 1.0,
        "tracking.uri": f"sqlite:///{workdir / 'mlflow.db'}",
        "train.max_steps": args.steps, "train.learning_rate": args.lr, "train.seed": args.seed,
        "templates.mixture.replay.ratio": args.replay_ratio,
    }
    if not replay:
        over["templates.mixture.replay.from"] = None
    for kv in args.set or []:
        key, _, value = kv.partition("=")
        over[key] = yaml.safe_load(value)
    return load_config(REPO / args.config, over)


def first_round(cfg: MixtuneConfig, args) -> MixtuneConfig:
    """R0 trains from scratch: more steps at the from-scratch learning rate."""
    train = cfg.train.model_copy(update={"max_steps": args.first_steps, "learning_rate": 0.005, "warmup_steps": 60})
    return cfg.model_copy(update={"train": train})


def run_round(cfg: MixtuneConfig, workdir: Path, name: str, upload: tuple[str, Path], progress) -> dict:
    """Upload one batch to its incoming prefix and let the watcher run the DAG on it, once."""
    from components.common.storage import Store
    from components.common.tracking import setup
    from pipelines.local import local_services, run_local
    from pipelines.watch import watch

    prefix, path = upload
    kept: dict = {}

    def run(c: MixtuneConfig) -> dict:
        kept["summary"] = run_local(c, workdir, embedded_s3=False, pipeline_run=f"continual-{name}")
        return kept["summary"]

    started = time.time()
    with logged_to(workdir / "logs" / f"{name}.log"), local_services(cfg, workdir) as live:
        store = Store(live.storage)
        setup(live)
        before = alias_version_safe(live.registry.model_name)
        store.put_file(prefix.rstrip("/") + "/" + path.name, path)
        records = watch(live, workdir, run_fn=run, once=True, log=lambda line: print(line, flush=True))
        after = alias_version_safe(live.registry.model_name)
    if len(records) == 1 and records[0]["status"] == "FAILED" and after == before:
        # The pipeline refused the batch before a model was trained (ingest's summary-support check):
        # a refusal, with the champion unchanged, not a broken benchmark.
        progress(f"{name}: FAILED, champion v{before} stays: {records[0]['error'][:200]}")
        return {"round": name, "summary": None, "failed": records[0]["error"], "champion_before": before,
                "champion_after": after, "promoted": False, "seconds": round(time.time() - started, 1),
                "batch": path.name}
    if len(records) != 1 or records[0]["status"] != "FINISHED" or "summary" not in kept:
        raise RuntimeError(f"round {name}: the watcher ran {records} (see {workdir}/logs/{name}.log)")
    s = kept["summary"]
    reg = s["registered"] or {}
    progress(f"{name}: {s['seconds']} s, v{reg.get('version')} {'promoted' if after != before else 'kept'}; "
             f"champion v{before} -> v{after}; {reg.get('decision', '')[:160]}")
    return {"round": name, "summary": s, "champion_before": before, "champion_after": after,
            "promoted": after == reg.get("version") and after != before, "seconds": round(time.time() - started, 1),
            "batch": path.name}


def alias_version_safe(name: str) -> str | None:
    from mlflow.tracking import MlflowClient

    from components.common.registry import CHAMPION, alias_version

    return alias_version(MlflowClient(), name, CHAMPION)


def predictions(workdir: Path, cfg: MixtuneConfig, summary: dict) -> list[dict]:
    from components.common.schemas import read_rows
    from components.common.storage import Store, join
    from pipelines.local import local_services

    with local_services(cfg, workdir) as live:
        return read_rows(Store(live.storage), join(summary["artifact_root"], "evaluate", "predictions.parquet"))


def prepare_files(work: Path, args) -> dict[str, tuple[str, Path]]:
    from pipelines.sample_data import generate, write_jsonl

    data = work / "data"
    honest, aside = cut_batches(read_tweetsumm(), 3, args.poisoned)
    files = {"R0": (CHATS["path"], write_jsonl(generate(args.chats, 7), data / "chats-r0.jsonl")),
             "P": (TWEETS["path"], write_lines(poison(aside), data / "tweetsumm-poisoned.jsonl"))}
    for k, rows in enumerate(honest, 1):
        files[f"R{k}"] = (TWEETS["path"], write_lines(rows, data / f"tweetsumm-batch{k}.jsonl"))
    return files


def upload_public(cfg: MixtuneConfig, workdir: Path, reviews: int, summaries: int = 0) -> None:
    from components.common.storage import Store, join
    from pipelines.local import local_services

    data = workdir.parent / "data"
    files = {"alexa": reviews_subset(ALEXA, reviews, data / f"alexa-{reviews}.tsv")}
    if summaries:
        files["dialogsum"] = lines_subset(DIALOGSUM, summaries, data / f"dialogsum-{summaries}.jsonl")
    with local_services(cfg, workdir) as live:
        store = Store(live.storage)
        for folder, path in files.items():
            store.put_file(join(store.root, "public", folder, path.name), path)


def fresh(work: Path) -> None:
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            raise SystemExit(f"{work} is not empty and not a continual-benchmark folder: choose another --workdir")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("made by benchmarks/continual.py; wiped by its next run\n")


def copy_state(src: Path, dst: Path) -> None:
    """An arm's S3 data and registry, as they are: the rounds run on from there."""
    shutil.copytree(src / "s3", dst / "s3")
    shutil.copy2(src / "mlflow.db", dst / "mlflow.db")


def run_rounds(args, work: Path, arms: dict[str, Path], cfg: MixtuneConfig, progress) -> dict[str, list[dict]]:
    """Both arms' rounds, saved to <work>/rounds.json after each (--rescore reads it back)."""
    if args.from_r0 and Path(args.from_r0).resolve() == work:
        raise SystemExit(f"--from-r0 {args.from_r0} is the --workdir this run wipes: give another --workdir")
    if args.from_r0 and not (Path(args.from_r0) / R0_STATE).is_dir():
        raise SystemExit(f"--from-r0 {args.from_r0}: no {R0_STATE}/ there (the state as it was after R0, which this "
                         "benchmark saves once R0 has run; later rounds' claims make the final state unusable)")
    fresh(work)
    files = prepare_files(work, args)
    if args.from_r0:  # R0 of an earlier run (same --chats, --reviews and --first-steps): its S3 data and registry
        first = Path(args.from_r0).resolve()
        copy_state(first / R0_STATE, arms["replay"])
        r0 = json.loads((first / "rounds.json").read_text())["replay"][0]
        progress(f"R0: reused from {first} (v{r0['champion_after']})")
        rounds = {"replay": [r0]}
    else:
        upload_public(cfg, arms["replay"], args.reviews, args.public_summaries)
        rounds = {"replay": [run_round(first_round(cfg, args), arms["replay"], "R0", files["R0"], progress)]}
        # Later rounds claim their batches in this state: --from-r0 needs it as it was before them.
        copy_state(arms["replay"], work / R0_STATE)

    def save() -> None:
        (work / "rounds.json").write_text(json.dumps(rounds, default=str))

    if "no-replay" in arms:  # the same R0, copied: both arms start from one first champion
        copy_state(arms["replay"], arms["no-replay"])
        rounds["no-replay"] = [dict(rounds["replay"][0])]
    save()
    for name in ("R1", "P", "R2", "R3"):
        rounds["replay"].append(run_round(cfg, arms["replay"], name, files[name], progress))
        save()
    if "no-replay" in arms:
        base_cfg = arm_config(args, arms["no-replay"], replay=False)
        for name in ("R1", "R2", "R3"):
            rounds["no-replay"].append(run_round(base_cfg, arms["no-replay"], name, files[name], progress))
            save()
    return rounds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=".mixtune/continual")
    p.add_argument("--config", default="configs/continual.yaml")
    p.add_argument("--first-steps", type=int, default=1000, help="R0's steps (from scratch, lr 0.005)")
    p.add_argument("--steps", type=int, default=None, help="each later round's steps (default: the config's)")
    p.add_argument("--lr", type=float, default=None, help="each later round's learning rate (default: the config's)")
    p.add_argument("--replay-ratio", type=float, default=None, help="default: the config's")
    p.add_argument("--chats", type=int, default=2400, help="generated chats in R0 (2400: a test split of "
                   "about 360, enough to resolve max_drop 3 on ROUGE-L)")
    p.add_argument("--reviews", type=int, default=600, help="Alexa reviews in the public task data")
    p.add_argument("--public-summaries", type=int, default=0, metavar="N", help="also N DialogSum dialogues as "
                   "public summarization data every round reads (FLAN-style general skill; 0 = none)")
    p.add_argument("--poisoned", type=int, default=200, help="TweetSumm conversations in the poisoned batch")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-baseline", action="store_true", help="skip the replay-off arm")
    p.add_argument("--from-r0", metavar="DIR", help="reuse R0 from an earlier run's --workdir (kept as it is; give "
                   "the same --chats, --reviews and --first-steps): tune the later rounds without retraining R0")
    p.add_argument("--rescore", action="store_true", help="score the rounds already in --workdir again, run nothing")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config override for every round")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    command = "python benchmarks/continual.py " + shlex.join(sys.argv[1:])
    print(f"command: {command}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # leave through the `with` blocks: S3 stops
    defaults = load_config(REPO / args.config)
    args.steps = args.steps or defaults.train.max_steps
    args.lr = args.lr or defaults.train.learning_rate
    args.replay_ratio = args.replay_ratio if args.replay_ratio is not None else defaults.templates.mixture.replay.ratio
    work = (REPO / args.workdir).resolve()
    started = time.time()
    progress = lambda line: print(f"[{time.time() - started:6.0f} s] {line}", flush=True)  # noqa: E731
    arms = {"replay": work / "replay"} | ({} if args.no_baseline else {"no-replay": work / "no-replay"})
    cfg = arm_config(args, arms["replay"], replay=True)
    if args.rescore:  # the rounds of an earlier run of this folder, scored again (S3 data and registry kept)
        rounds = json.loads((work / "rounds.json").read_text())
    else:
        rounds = run_rounds(args, work, arms, cfg, progress)
    ran = {arm: [r for r in rs if r["summary"] is not None] for arm, rs in rounds.items()}  # not refused at ingest
    preds = {arm: {r["round"]: predictions(arms[arm], cfg, r["summary"]) for r in rs} for arm, rs in ran.items()}
    scored = score_against_first(ran, preds, cfg.evaluate.bootstrap)
    verdict = goal_verdict(rounds, scored)
    print(f"\ncommand: {command}")
    print(f"R0 {args.first_steps} steps; later rounds {args.steps} steps at lr {args.lr:g}, replay ratio "
          f"{args.replay_ratio:g}; {len(rounds['replay'])} replay-arm runs"
          + ("" if args.no_baseline else f", {len(rounds['no-replay']) - 1} replay-off runs"))
    print_rounds(ran, scored)
    for arm, rs in rounds.items():
        for r in rs:
            if r["summary"] is None:
                print(f"{arm} {r['round']}: refused before training, champion v{r['champion_after']} stays: {r['failed']}")
    print(verdict["line"])
    print(f"total {time.time() - started:.0f} s")
    if args.json:
        slim = {arm: [{k: v for k, v in r.items() if k != "summary"} | ({
            "decision": (r["summary"]["registered"] or {}).get("decision"),
            "gate": r["summary"]["evaluation"]["gate"], "n_eval": r["summary"]["n_eval"],
            "pipeline_seconds": r["summary"]["seconds"]} if r["summary"] else {}) for r in rs]
            for arm, rs in rounds.items()}
        Path(args.json).write_text(json.dumps({"command": command, "args": vars(args), "rounds": slim,
                                               "scores": scored, "goal": verdict}, indent=2, default=str))


if __name__ == "__main__":
    main()
