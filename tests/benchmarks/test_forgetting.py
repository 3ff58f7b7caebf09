"""The forgetting benchmark's pure helpers: the frozen set's slices, per-slice scores, the goal verdict."""
import importlib.util
from pathlib import Path

import pytest

from components.evaluate import metrics as M

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "forgetting.py"
spec = importlib.util.spec_from_file_location("forgetting_benchmark", PATH)
fg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fg)


def row(id_, task, candidate, refs):
    return {"id": id_, "task": task, "inputs": "x", "references": refs, "candidate": candidate}


def test_freeze_takes_first_n_by_id_per_task_and_source():
    rows = [{"id": f"{src}:{k}#0", "task": task} for src, task in
            [("samsum", "summarization"), ("dialogsum", "summarization"), ("dialogsum", "dialogue_topic")]
            for k in (3, 1, 2)]
    frozen = fg.freeze_eval_set(rows, 2, ["summarization", "dialogue_topic"])
    # Per id alone, DialogSum would fill the summarization quota; per source each keeps its first two.
    assert [r["id"] for r in frozen] == ["dialogsum:1#0", "dialogsum:2#0", "samsum:1#0", "samsum:2#0",
                                         "dialogsum:1#0", "dialogsum:2#0"]
    assert [r["task"] for r in frozen] == ["summarization"] * 4 + ["dialogue_topic"] * 2


def test_slices_split_mixed_tasks_by_source_only():
    rows = [row("dialogsum:1#0", "summarization", "", ["a"]), row("tweetsumm:1#0", "summarization", "", ["a"]),
            row("dialogsum:2#0", "summarization", "", ["a"]), row("yelp:1#0", "review_rating", "", ["3"])]
    assert fg.slices(rows) == {("summarization", fg.ALL): [0, 1, 2], ("summarization", "dialogsum"): [0, 2],
                               ("summarization", "tweetsumm"): [1], ("review_rating", fg.ALL): [3]}


def test_score_slices_match_the_metric_functions_on_each_slice():
    refs = [["the cat sat on the mat"], ["a dog ran home"], ["customer wants a refund"], ["agent fixed it"]]
    ids = ["dialogsum:1#0", "samsum:1#0", "tweetsumm:1#0", "tweetsumm:2#0"]
    a = ["the cat sat", "a dog ran home", "hello", "agent"]
    b = ["the cat", "a dog", "customer wants a refund", "agent fixed it"]
    preds = {s: [row(i, "summarization", p, r) for i, p, r in zip(ids, outs, refs)]
             for s, outs in (("A", a), ("B1", b), ("B2", a))}
    rows = {(r["slice"], r["metric"]): r for r in fg.score_slices(preds, resamples=200)}
    assert set(rows) == {(s, m) for s in (fg.ALL, "dialogsum", "samsum", "tweetsumm") for m in ("rougeL", "rouge1")}
    tw = rows[("tweetsumm", "rouge1")]
    assert tw["n"] == 2
    assert tw["A"]["value"] == pytest.approx(M.score("rouge", a[2:], refs[2:])["rouge1"])
    assert tw["B1-A"]["mean"] == pytest.approx(M.score("rouge", b[2:], refs[2:])["rouge1"] - tw["A"]["value"])
    assert rows[(fg.ALL, "rouge1")]["B2-A"] == {"mean": 0.0, "low": 0.0, "high": 0.0}  # same outputs
    assert rows[("dialogsum", "rouge1")]["B1-A"]["mean"] < 0 < tw["B1-A"]["mean"]


def test_score_slices_refuses_stages_scored_on_other_examples():
    preds = {"A": [row("samsum:1#0", "summarization", "a", ["a"])],
             "B1": [row("samsum:2#0", "summarization", "a", ["a"])]}
    with pytest.raises(ValueError, match="other examples"):
        fg.score_slices(preds, resamples=100)


def test_rating_slices_use_accuracy_and_no_rouge():
    preds = {s: [row("yelp:1#0", "review_rating", p, ["4"]), row("yelp:2#0", "review_rating", "2", ["2"])]
             for s, p in (("A", "4"), ("B1", "1"), ("B2", "4"))}
    (r,) = fg.score_slices(preds, resamples=100)
    assert (r["metric"], r["A"]["value"], r["B1"]["value"], r["B1-A"]["mean"]) == ("accuracy", 100.0, 50.0, -50.0)


def verdict_rows(b1: dict[str, float], b2: dict[str, float]) -> list[dict]:
    return [{"task": "summarization", "slice": s, "metric": "rouge1", "B1-A": {"mean": b1[s]}, "B2-A": {"mean": b2[s]}}
            for s in b1]


@pytest.mark.parametrize("b1, b2, met, drops, holds", [
    ({"dialogsum": -5.0, "samsum": -3.0, "tweetsumm": 9.0}, {"dialogsum": -1.0, "samsum": 0.5, "tweetsumm": 8.0},
     True, True, True),
    ({"dialogsum": -5.0, "samsum": -0.5, "tweetsumm": 9.0}, {"dialogsum": 0.0, "samsum": 0.0, "tweetsumm": 8.0},
     False, False, True),  # one old source did not drop without replay
    ({"dialogsum": -5.0, "samsum": -3.0, "tweetsumm": 9.0}, {"dialogsum": -1.01, "samsum": 0.0, "tweetsumm": 8.0},
     False, True, False),  # replay lost more than 1 point on DialogSum
])
def test_goal_reads_only_old_summarization_sources(b1, b2, met, drops, holds):
    v = fg.goal_verdict(verdict_rows(b1, b2), {"tweetsumm"})
    assert (v["met"], v["without_replay_drops"], v["with_replay_holds"]) == (met, drops, holds)
    assert "tweetsumm" not in v["detail"]


def test_goal_needs_an_old_source():
    with pytest.raises(ValueError, match="no old summarization"):
        fg.goal_verdict(verdict_rows({"tweetsumm": -2.0}, {"tweetsumm": 0.0}), {"tweetsumm"})
