"""Per-task and per-source scores: a task fed by several sources gets each source's slice."""
from __future__ import annotations

import pytest

from components.common.config import parse_config
from components.evaluate import metrics as M
from components.evaluate.scoring import score_tasks


def _row(rid: str, task: str, ref: str) -> dict:
    return {"id": rid, "task": task, "inputs": "x", "targets": ref, "references": [ref]}


def test_a_task_with_two_sources_gets_a_slice_per_source():
    rows = [_row("chats:1#0", "summarization", "the refund was sent to the card"),
            _row("tweetsumm:9#0", "summarization", "customer asks about a late parcel"),
            _row("chats:2#0", "summarization", "order 42 goes to a new address"),
            _row("alexa:5#0", "review_rating", "5")]
    outputs = {"candidate": ["the refund was sent", "customer asks about a parcel", "order 7 is late", "5"],
               "base": ["hello", "hello", "hello", "3"],
               "champion": ["the refund was sent to the card", "hello", "order 42 goes to a new address", "5"]}
    cfg = parse_config({"evaluate": {"tasks": ["summarization", "review_rating"]}})
    tasks, _, _ = score_tasks(cfg, rows, outputs)
    assert "sources" not in tasks["review_rating"]  # one source: the task is its only slice
    sources = tasks["summarization"]["sources"]
    assert list(sources) == ["chats", "tweetsumm"] and [s["n"] for s in sources.values()] == [2, 1]
    chats = [rows[0], rows[2]]
    for role in outputs:
        want = M.score("rouge", [outputs[role][0], outputs[role][2]], [r["references"] for r in chats])["rougeL"]
        assert sources["chats"]["scores"][role] == pytest.approx(want)
    # The chats got worse than the champion (which copied them) while the task as a whole did not fall as much.
    d = sources["chats"]["delta"]["champion"]
    assert d["mean"] == pytest.approx(sources["chats"]["scores"]["candidate"] - sources["chats"]["scores"]["champion"])
    assert d["mean"] < tasks["summarization"]["delta"]["champion"]["mean"] < 0
    assert sources["tweetsumm"]["delta"]["champion"]["mean"] > 0
    assert "new_data" not in tasks["summarization"]  # no new_ids: nothing is told apart from this run's data
    # This run's own split brought the tweetsumm row and a new chat; chats:1 came back from the champion's set.
    tasks, _, _ = score_tasks(cfg, rows, outputs, frozenset({"tweetsumm:9#0", "chats:2#0", "alexa:5#0"}))
    new = tasks["summarization"]["new_data"]
    assert new["sources"] == ["chats", "tweetsumm"] and new["n"] == 2
    want = M.score("rouge", [outputs["candidate"][1], outputs["candidate"][2]],
                   [rows[1]["references"], rows[2]["references"]])["rougeL"]
    assert new["scores"]["candidate"] == pytest.approx(want)
    assert "new_data" not in tasks["review_rating"]  # all of it is this run's: the task is its new data


def test_without_a_champion_the_slices_have_no_champion_delta():
    rows = [_row("a:1#0", "summarization", "one two"), _row("b:1#0", "summarization", "three four")]
    tasks, _, _ = score_tasks(parse_config({}), rows, {"candidate": ["one", "four"], "base": ["x", "y"]})
    assert all(s["delta"]["champion"] is None and s["scores"]["champion"] is None
               for s in tasks["summarization"]["sources"].values())
