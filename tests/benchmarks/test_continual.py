"""benchmarks/continual.py's pure parts: the arrival batches, scoring against the first champion, the goal."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from components.common.config import BootstrapConfig

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


batches, score = load("continual_batches"), load("continual_score")
cut_batches, poison = batches.cut_batches, batches.poison
goal_verdict, score_against_first = score.goal_verdict, score.score_against_first


def conversations(n: int) -> list[dict]:
    return [{"id": f"c{i}", "dialogue": f"chat {i}", "summaries": [f"summary {i}"]} for i in range(n)]


def test_batches_never_share_a_conversation_and_poison_moves_every_summary():
    honest, aside = cut_batches(conversations(50), 3, 8)
    ids = [r["id"] for batch in honest for r in batch] + [r["id"] for r in aside]
    assert len(ids) == len(set(ids)) == 8 + 3 * 14 and [len(b) for b in honest] == [14, 14, 14]
    bad = poison(aside)
    assert [r["id"] for r in bad] == [r["id"] for r in aside]
    assert all(b["summaries"] != a["summaries"] for a, b in zip(aside, bad))
    assert sorted(s for r in bad for s in r["summaries"]) == sorted(s for r in aside for s in r["summaries"])


def row(ident: str, task: str, ref: str, candidate: str, champion: str | None = None) -> dict:
    return {"id": ident, "task": task, "references": [ref], "candidate": candidate, "champion": champion}


def summary(version: str, champion: str | None) -> dict:
    return {"registered": {"version": version}, "evaluation": {"champion_version": champion}}


def round_(name: str, version: str, champion: str | None, promoted: bool) -> dict:
    before = champion
    return {"round": name, "summary": summary(version, champion), "promoted": promoted,
            "champion_before": before, "champion_after": version if promoted else before}


def test_scores_against_the_first_champion_and_the_goal():
    refs = {f"chats:{i}": f"the customer ordered item {i} and got a refund" for i in range(6)}
    tweets = {f"tweetsumm:{i}": f"customer asks about the app crash number {i}" for i in range(6)}
    r0 = [row(k, "summarization", v, v) for k, v in refs.items()]  # R0 knows the old chats by heart
    r1 = [row(k, "summarization", v, v, v) for k, v in refs.items()] + [
        row(k, "summarization", v, v, "no idea") for k, v in tweets.items()]  # learned the new chats too
    forgot = [row(k, "summarization", v, "no idea", v) for k, v in refs.items()] + [
        row(k, "summarization", v, v, "no idea") for k, v in tweets.items()]
    rounds = {"replay": [round_("R0", "1", None, True), round_("R1", "2", "1", True),
                         round_("P", "3", "2", False)],
              "no-replay": [round_("R0", "1", None, True), round_("R1", "4", "1", False)]}
    preds = {"replay": {"R0": r0, "R1": r1, "P": forgot}, "no-replay": {"R0": r0, "R1": forgot}}
    scored = score_against_first(rounds, preds, BootstrapConfig(resamples=200))
    chats, new = scored["replay"]["R1"]["summarization/chats"], scored["replay"]["R1"]["summarization/tweetsumm"]
    assert chats["metric"] == "rouge1" and chats["n"] == 6 and abs(chats["delta"]["mean"]) < 1e-9
    assert new["delta"]["mean"] > 50  # R0's outputs on TweetSumm come from R1's champion column
    assert scored["no-replay"]["R1"]["summarization/chats"]["delta"]["high"] < -50
    verdict = goal_verdict(rounds, scored)
    assert verdict["met"] and verdict["poisoned_refused"] and verdict["without_replay_drops"], verdict["line"]
    assert verdict["line"].startswith("goal (") and ": MET;" in verdict["line"]
    # A poisoned batch the ingest refused (no model trained, the champion stays) is refused too.
    rounds["replay"][2] = {"round": "P", "summary": None, "failed": "refusing this batch: source 'tweetsumm'",
                           "promoted": False, "champion_before": "2", "champion_after": "2"}
    unscored = {arm: {k: v for k, v in s.items() if k != "P"} for arm, s in scored.items()}
    assert goal_verdict(rounds, unscored)["poisoned_refused"] and goal_verdict(rounds, unscored)["met"]
    # A poisoned round that got through fails the goal, and says so.
    rounds["replay"][2] = round_("P", "3", "2", True)
    assert not goal_verdict(rounds, scored)["met"]


def test_from_r0_refuses_the_workdir_it_would_wipe(tmp_path):
    continual = load("continual")
    work = tmp_path / "continual"
    (work / "replay").mkdir(parents=True)
    (work / continual.MARKER).write_text("x")
    (work / "rounds.json").write_text("{}")
    args = argparse.Namespace(from_r0=str(work))
    with pytest.raises(SystemExit, match="is the --workdir this run wipes"):
        continual.run_rounds(args, work, {"replay": work / "replay"}, None, print)
    assert (work / "rounds.json").exists()  # R0's state is still there


def test_from_r0_needs_the_state_saved_after_r0(tmp_path):
    # The final state of an earlier run holds the later rounds' claims: the watcher would never run R1 on it.
    continual = load("continual")
    earlier, work = tmp_path / "earlier", tmp_path / "new"
    (earlier / "replay").mkdir(parents=True)
    (earlier / "rounds.json").write_text("{}")
    args = argparse.Namespace(from_r0=str(earlier))
    with pytest.raises(SystemExit, match="no r0-state/ there"):
        continual.run_rounds(args, work, {"replay": work / "replay"}, None, print)
    assert not work.exists()  # refused before anything was wiped or written


def test_public_summaries_are_a_stable_hash_ordered_subset(tmp_path):
    batches = load("continual_batches")
    source = tmp_path / "all.jsonl"
    source.write_text("".join(f'{{"fname": "train_{i}", "dialogue": "d{i}", "summary": "s{i}"}}\n' for i in range(50)))
    first = batches.lines_subset(source, 10, tmp_path / "a.jsonl").read_text().splitlines()
    again = batches.lines_subset(source, 10, tmp_path / "b.jsonl").read_text().splitlines()
    assert first == again and len(set(first)) == 10 and set(first) <= set(source.read_text().splitlines())
    assert first != source.read_text().splitlines()[:10]  # not the file's own order: a fair sample of it
