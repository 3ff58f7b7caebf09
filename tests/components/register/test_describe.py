"""The version description reads metrics.json in the layout evaluate writes, per task and per source."""
from __future__ import annotations

from components.common.config import parse_config
from components.common.gate import evaluate_gate
from components.evaluate.scoring import score_tasks
from components.register.describe import version_description


def _row(rid: str, ref: str) -> dict:
    return {"id": rid, "task": "summarization", "inputs": "x", "targets": ref, "references": [ref]}


def test_a_task_with_two_sources_gets_a_row_per_source():
    rows = [_row("chats:1#0", "the refund was sent to the card"), _row("tweetsumm:9#0", "customer asks about a parcel"),
            _row("chats:2#0", "order 42 goes to a new address")]
    outputs = {"candidate": ["the refund was sent", "customer asks about a parcel", "order 42 is late"],
               "base": ["hello", "hello", "hello"],
               "champion": ["the refund was sent to the card", "hello", "order 42 goes to a new address"]}
    cfg = parse_config({})
    tasks, _, _ = score_tasks(cfg, rows, outputs, frozenset({"tweetsumm:9#0"}))
    metrics = {"tasks": tasks, "primary_task": "summarization", "primary_metric": "rougeL", "n_examples": 3,
               "champion_version": "1", "eval_set_sha256": "ab" * 32}
    text = version_description(evaluate_gate(cfg.registry.gate, metrics), metrics, "run-7")
    chats = tasks["summarization"]["sources"]["chats"]
    want = (f"| summarization / chats | rougeL | {chats['scores']['candidate']:.2f} | "
            f"{chats['scores']['champion']:.2f} | {chats['scores']['base']:.2f} | ")
    assert want in text, text
    assert "| summarization / tweetsumm | rougeL | 100.00 |" in text and "against champion v1" in text
