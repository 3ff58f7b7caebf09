"""Which examples every model is scored on: per task or per source, and the champion's gated set added, so a
retrain on new chat logs alone is still scored on the old tasks and sources."""
from __future__ import annotations

from components.common.registry import EVAL_URI_TAG
from components.common.schemas import EXAMPLE_SCHEMA, write_table
from components.common.storage import join
from components.evaluate.core import Champion, evaluation_rows
from components.evaluate.evalset import select_examples, source_of, with_gated_set


def example(source: str, i: int, task: str = "summarization") -> dict:
    return {"id": f"{source}:{i}#{task}#0", "record_id": f"{source}:{i}", "task": task, "template_id": f"{task}-eval",
            "template_kind": "zero_shot", "inputs": f"{source} dialogue {i}", "targets": f"summary {i}",
            "references": [f"summary {i}"]}


def test_per_source_quota_gives_a_small_source_its_share():
    rows = [example("new", i) for i in range(200)] + [example("old", i) for i in range(30)]
    by_task = select_examples(rows, 50, ["summarization"])
    by_source = select_examples(rows, 50, ["summarization"], per_source=True)
    count = lambda chosen, s: sum(source_of(r["id"]) == s for r in chosen)  # noqa: E731
    assert len(by_task) == 50 and count(by_task, "old") < 15  # the hash order draws ~13 % from the old source
    assert count(by_source, "new") == 50 and count(by_source, "old") == 30
    # The same rows in another order select the same set.
    assert {r["id"] for r in select_examples(rows[::-1], 50, ["summarization"], per_source=True)} == {
        r["id"] for r in by_source}


def test_the_champions_gated_set_adds_its_tasks_and_sources():
    new = [example("tweetsumm", i) for i in range(10)]
    gated = [example("chats", i) for i in range(5)] + [example("alexa", i, "review_rating") for i in range(4)]
    gated.append(new[0])  # an example both have is scored once
    rows, tasks = with_gated_set(new, ["summarization"], gated)
    assert tasks == ["summarization", "review_rating"] and len(rows) == 10 + 9
    assert sorted({source_of(r["id"]) for r in rows}) == ["alexa", "chats", "tweetsumm"]


def test_evaluation_rows_read_the_champions_set_through_its_tags(tiny_config, store):
    examples_uri = join(store.root, "runs", "new", "templates")
    write_table(store, join(examples_uri, "test.parquet"), [example("tweetsumm", i) for i in range(6)], EXAMPLE_SCHEMA)
    old_eval = join(store.root, "runs", "old", "evaluate")
    write_table(store, join(old_eval, "eval_set.parquet"),
                [example("chats", i) for i in range(4)] + [example("alexa", i, "review_rating") for i in range(3)],
                EXAMPLE_SCHEMA)
    champion = Champion("1", "s3://b/m", {EVAL_URI_TAG: old_eval})
    cfg = tiny_config.model_copy(update={"evaluate": tiny_config.evaluate.model_copy(update={"per_source": True})})
    rows, where, tasks, new_ids = evaluation_rows(cfg, store, examples_uri, champion)
    assert tasks == ["summarization", "review_rating"] and len(rows) == 13
    # The gate's improve_on: new_data tells this run's own examples from the champion's.
    assert new_ids == {r["id"] for r in rows if r["id"].startswith("tweetsumm:")} and len(new_ids) == 6
    assert where.endswith("/runs/new/templates/test.parquet + " + join(old_eval, "eval_set.parquet"))
    # Off, or before any champion, or with a frozen set: this run's split only.
    off = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"include_champion_set": False})})
    assert len(evaluation_rows(off, store, examples_uri, champion)[0]) == 6
    assert len(evaluation_rows(cfg, store, examples_uri, None)[0]) == 6
    # A champion whose evaluation is gone (deleted) cannot add it: this run's split, not an error.
    gone = Champion("1", "s3://b/m", {EVAL_URI_TAG: join(store.root, "runs", "deleted", "evaluate")})
    assert len(evaluation_rows(cfg, store, examples_uri, gone)[0]) == 6
