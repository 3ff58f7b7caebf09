"""The gate holds faithfulness, whatever the ROUGE: scored by evaluate's own code on the generated chats.

- A candidate whose summaries read like the references but with the names and amounts swapped (what a
  model trained on such references writes) beats a less fluent honest champion on ROUGE-L and is refused.
- Before the first champion, an untrained base (empty outputs) is no baseline: a looping candidate that
  beats it on ROUGE is refused, and an honest one is promoted on the absolute floor.
"""
from __future__ import annotations

import re

from components.common.config import parse_config
from components.common.gate import evaluate_gate
from components.evaluate.scoring import score_tasks
from pipelines.sample_data import AGENTS, FIRST, LAST, generate

CFG = parse_config({})  # the default gate: ceilings 10% unsupported, 2% degenerate, floor 20 on an unusable base


def eval_rows(n: int = 60) -> list[dict]:
    rows = []
    for chat in generate(n, seed=11):
        dialogue = "\n".join(f"{m['role'].title()}: {m['content']}" for m in chat["messages"])
        rows.append({"id": f"chats:{chat['conversation_id']}#0", "task": "summarization",
                     "inputs": f"Summarize this dialogue:\n{dialogue}", "targets": chat["summary"],
                     "references": [chat["summary"]]})
    return rows


NAMES = FIRST + LAST + AGENTS


def swap_facts(summary: str, k: int) -> str:
    """Every name becomes another one of the generator's names, every amount and number another value."""
    summary = re.sub(r"\b(" + "|".join(NAMES) + r")\b", lambda m: NAMES[(NAMES.index(m.group(0)) + 7 + k) % len(NAMES)],
                     summary)
    return re.sub(r"\d+", lambda m: str(int(m.group(0)) + 3 + k), summary)


def less_fluent(summary: str) -> str:
    """An honest summary that stops after its first third: every fact it keeps is true."""
    words = summary.split()
    return " ".join(words[:max(4, len(words) // 3)])


def verdict(outputs: dict[str, list[str]], rows: list[dict], champion_version: str | None):
    tasks, _, checks = score_tasks(CFG, rows, outputs)
    metrics = {"tasks": tasks, "primary_task": "summarization", "champion_version": champion_version,
               "confidence": 0.95, "faithfulness": CFG.evaluate.faithfulness.model_dump()}
    return tasks["summarization"], evaluate_gate(CFG.registry.gate, metrics), checks


def test_swapped_names_and_amounts_beat_the_champion_on_rouge_and_are_refused():
    rows = eval_rows()
    refs = [r["targets"] for r in rows]
    swapped = [swap_facts(s, i) for i, s in enumerate(refs)]
    outputs = {"candidate": swapped, "base": [""] * len(rows), "champion": [less_fluent(s) for s in refs]}
    task, d, checks = verdict(outputs, rows, champion_version="1")

    scores, f = task["scores"], task["faithfulness"]["scores"]
    assert scores["candidate"]["rougeL"] > scores["champion"]["rougeL"] + 5  # ROUGE alone would promote it
    assert task["delta"]["champion"]["low"] > 0
    assert f["champion"]["unsupported"] == 0.0 and f["candidate"]["unsupported"] > 50
    assert f["candidate"]["degenerate"] == 0.0  # fluent, just wrong
    assert not d.promote
    failed = {c.name for c in d.checks if not c.passed}
    assert failed == {"summarization unsupported facts <= 10%", "summarization unsupported facts hold vs champion"}
    assert "improves summarization" not in failed
    # The invented facts are named, as written, for the report.
    first = checks["candidate"][0]
    assert first.unsupported and all(fact.text in swapped[0] for fact in first.unsupported)


def test_a_looping_candidate_is_refused_before_the_first_champion():
    rows = eval_rows()
    # It learned the opening of the summaries and then loops on one token: better than an empty base.
    looping = [" ".join(s.split()[:4]) + " order 2222222222 2222222222" for s in (r["targets"] for r in rows)]
    task, d, _ = verdict({"candidate": looping, "base": [""] * len(rows)}, rows, champion_version=None)
    assert task["faithfulness"]["scores"]["base"]["degenerate"] == 100.0
    assert task["delta"]["base"]["low"] > 0  # "better than the base", with confidence
    assert not d.promote
    checks = {c.name: c for c in d.checks}
    assert checks["base model usable"].passed and checks["base model usable"].detail.startswith("no: 100.0%")
    assert not checks["summarization degenerate outputs <= 2%"].passed  # whatever its ROUGE-L (above the floor)
    assert "improves summarization" not in checks  # the comparison with an unusable base is not made


def test_an_honest_first_model_passes_on_the_absolute_floor():
    rows = eval_rows()
    honest = [less_fluent(r["targets"]) for r in rows]
    task, d, _ = verdict({"candidate": honest, "base": [""] * len(rows)}, rows, champion_version=None)
    assert d.promote, d.reason
    assert task["faithfulness"]["scores"]["candidate"]["unsupported"] == 0.0
    assert "reaches summarization floor" in {c.name for c in d.checks}
    assert d.reason.startswith("promote: rougeL")
