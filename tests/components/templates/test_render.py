from collections import Counter

import pytest

from components.common.config import parse_config
from components.templates.core import build_examples
from components.templates.registry import PLACEHOLDER, load_registry as _load_registry
from components.templates.render import build_context, expand, exemplars_for, fill, options_for, tasks_for

TASKS = ["summarization", "dialogue_topic", "review_rating", "ner", "code_translation"]


REGISTRY = _load_registry()


def load_registry():
    return REGISTRY


def context(train, variants=1, shots=2, seed=13, only=None):
    return build_context(train, load_registry(), seed, variants, shots, only)


def option_lines(inputs: str) -> list[str]:
    block = inputs.split("OPTIONS:\n", 1)[1].split("\n\n")[0]
    return [line[2:] for line in block.split("\n") if line.startswith("- ")]


def test_every_template_of_every_task_renders_without_leftover_placeholders(records):
    registry = load_registry()
    train = [r for task in TASKS for r in records(task, 30)]
    ctx = context(train, variants=20)  # more variants than templates: every template, every record
    examples, unused = expand(train, "train", ctx)
    assert not unused
    by_task = Counter(e["task"] for e in examples)
    # dialogue_topic records also carry a summary, so they feed summarization as well.
    assert by_task["summarization"] == 60 * len(registry["summarization"].templates)
    for name in TASKS[1:]:
        assert by_task[name] == 30 * len(registry[name].templates), name
    seen = {(e["task"], e["template_id"]) for e in examples}
    assert seen == {(n, t.id) for n, task in registry.items() for t in task.templates}
    for e in examples:
        if e["task"] != "code_translation":  # code has literal braces; checked in the next test
            assert not PLACEHOLDER.search(e["inputs"] + e["targets"]), e
        assert e["inputs"].strip() and e["targets"].strip()
        assert e["template_kind"] == registry[e["task"]].template(e["template_id"]).kind
        rid, task, n = e["id"].split("#")
        assert rid == e["record_id"] and task == e["task"] and 0 <= int(n) < 20
    assert len({e["id"] for e in examples}) == len(examples)


def test_braces_in_data_are_safe(records):
    train = records("code_translation", 5)
    nasty = "void f() { if (x) { g({options}, {java}, {0}, {}); } } {{ }}"
    train[0]["fields"] = {"java": nasty, "cs": "void F() { {cs} }"}
    examples, _ = expand(train, "train", context(train, variants=20))
    mine = [e for e in examples if e["record_id"] == train[0]["id"]]
    assert len(mine) == 11
    for e in mine:
        assert e["targets"] in (nasty, "void F() { {cs} }")
        assert nasty in e["inputs"] or "void F() { {cs} }" in e["inputs"]
    assert fill("a {x} b", {"x": "{x}"}) == "a {x} b"  # a single pass: data is never re-substituted


def test_fixed_options_always_contain_the_gold_label(records):
    train = records("review_rating", 40)
    examples, _ = expand(train, "train", context(train, variants=20))
    opts = [e for e in examples if e["template_kind"] == "options"]
    assert len(opts) == 40 * 3
    for e in opts:
        assert option_lines(e["inputs"]) == ["1", "2", "3", "4", "5"] and e["targets"] in "12345"
        assert "OPTIONS:\n- 1\n- 2\n- 3\n- 4\n- 5" in e["inputs"]
    # A label outside the fixed set: the record still feeds the task, but never an options template.
    train[0]["fields"]["rating"] = "7"
    examples, _ = expand(train[:1], "train", context(train, variants=20))
    assert len(examples) == 11 - 3 and all(e["template_kind"] != "options" for e in examples)


def test_from_field_options_gold_plus_distractors_deterministic(records):
    train = records("dialogue_topic", 60)
    registry = load_registry()
    ctx = context(train)
    task = registry["dialogue_topic"]
    golds_first = 0
    for rec in train:
        opts = options_for(task, rec, ctx)
        assert len(opts) == 4 and len(set(opts)) == 4
        assert rec["fields"]["topic"] in opts and set(opts) <= set(ctx.labels["dialogue_topic"])
        assert opts == options_for(task, rec, context(train))  # deterministic
        golds_first += opts[0] == rec["fields"]["topic"]
    assert 5 < golds_first < 30  # shuffled: the gold is not always first
    examples, _ = expand(train, "train", context(train, variants=20))
    for e in (e for e in examples if e["template_kind"] == "options" and e["task"] == "dialogue_topic"):
        assert e["targets"] in option_lines(e["inputs"]) and len(option_lines(e["inputs"])) == 4


def test_few_shot_exemplars_come_from_train_never_self_nor_eval(records):
    train = records("summarization", 40)
    held_out = records("summarization", 10, "validation", start=100) + records("summarization", 10, "test", start=200)
    for r in held_out:  # very short, so they would top the pool if held-out records leaked in
        r["fields"] = {"dialogue": "A: x\nB: y", "summary": f"HELDOUT {r['id']}"}
    every = 40 * len(load_registry()["summarization"].templates)  # each record with every template, once
    cfg = parse_config({"templates": {"variants_per_record": 20, "few_shot_examples": 3,
                                      "mixture": {"total_examples": every}}})
    records_by_split = {"train": train, "validation": held_out[:10], "test": held_out[10:]}
    examples, _, _ = build_examples(cfg, records_by_split, load_registry())  # the context is built by core
    few = [e for e in examples["train"] if e["template_kind"] == "few_shot"]
    assert len(few) == 40 * 2
    by_id = {r["id"]: r for r in train}
    for e in few:
        own = by_id[e["record_id"]]["fields"]["summary"]
        assert own not in e["inputs"] and "HELDOUT" not in e["inputs"]
        assert e["inputs"].count("Summary: Order ") == 3  # three exemplars, each from another train record
    ctx = context(train)
    evals, _ = expand(held_out, "validation", ctx)
    assert {e["template_id"] for e in evals} == {"sum-01"} and len(evals) == 20
    # A pool of one record: it cannot be its own exemplar, so it gets no few-shot template.
    one = train[:1]
    solo, _ = expand(one, "train", context(one, variants=20))
    assert len(solo) == 13 - 2 and all(e["template_kind"] != "few_shot" for e in solo)
    assert exemplars_for(load_registry()["summarization"], one[0]["id"], context(one)) == []


def test_skip_when_leaves_out_templates_for_some_values(records):
    recs = records("ner", 3)
    recs[0]["fields"]["entities"] = "none"
    examples, _ = expand(recs, "train", context(recs, variants=20))
    none = {e["template_id"] for e in examples if e["record_id"] == recs[0]["id"]}
    assert len(none) == 10 - 2 and not none & {"ner-inv-01", "ner-inv-03"} and "ner-inv-02" in none
    assert len([e for e in examples if e["record_id"] == recs[1]["id"]]) == 10


def test_few_shot_pool_is_short_and_label_balanced(records):
    train = records("review_rating", 400)
    for r in train:  # 5-star reviews are the shortest, as in real data
        r["fields"]["review"] = ("ok " if r["fields"]["rating"] == "5" else "long text " * 20) + r["id"]
    ctx = context(train)
    pool = ctx.pools["review_rating"]
    assert len(pool) == 100  # a quarter of the train records
    stars = Counter(text.rsplit("Stars: ", 1)[1] for _, text in pool)
    assert stars == {s: 20 for s in "12345"}
    short = context(records("ner", 120)).pools["ner"]
    assert len(short) == 50 and [len(t) for _, t in short] == sorted(len(t) for _, t in short)


def test_eval_splits_get_exactly_the_eval_template_once_per_task(records):
    recs = [r for task in TASKS for r in records(task, 5, "test")]
    examples, _ = expand(recs, "test", context([]))
    registry = load_registry()
    assert len(examples) == 30  # dialogue_topic records feed summarization too
    for e in examples:
        assert e["template_id"] == registry[e["task"]].eval_template and e["id"].endswith("#0")
        assert e["template_kind"] == "zero_shot"


def test_template_choice_is_stable_when_records_are_added(records):
    base = [r for task in TASKS for r in records(task, 50)]
    more = base + [r for task in TASKS for r in records(task, 200, start=1000)]
    ex1, _ = expand(base, "train", context(base, variants=2))
    ex2, _ = expand(more, "train", context(more, variants=2))
    first = {e["id"]: e["template_id"] for e in ex1}
    assert first == {e["id"]: e["template_id"] for e in ex2 if e["id"] in first}
    other_seed, _ = expand(base, "train", context(base, variants=2, seed=14))
    assert first != {e["id"]: e["template_id"] for e in other_seed}
    usage = Counter(e["template_id"] for e in ex2 if e["task"] == "ner")
    assert len(usage) == 10  # every template gets used


def test_task_restrictions_from_config_and_source(records):
    registry = load_registry()
    rec = records("dialogue_topic", 1)[0]
    assert tasks_for(rec, registry) == ["summarization", "dialogue_topic"]
    assert tasks_for(rec, registry, only=["dialogue_topic"]) == ["dialogue_topic"]
    assert tasks_for({**rec, "tasks": ["summarization"]}, registry) == ["summarization"]
    assert tasks_for({**rec, "tasks": None}, registry) == ["summarization", "dialogue_topic"]
    assert tasks_for({**rec, "tasks": ["ner"]}, registry) == []
    empty = {**rec, "fields": {**rec["fields"], "topic": "  ", "summary": []}}
    assert tasks_for(empty, registry) == []
    examples, unused = expand([empty, rec], "train", context([rec]))
    assert unused == [empty["id"]] and {e["record_id"] for e in examples} == {rec["id"]}


@pytest.mark.parametrize("variants", [1, 3])
def test_variants_per_record_only_in_train(records, variants):
    train = records("ner", 10)
    examples, _ = expand(train, "train", context(train, variants=variants))
    assert len(examples) == 10 * variants
    per_record = Counter(e["record_id"] for e in examples)
    assert set(per_record.values()) == {variants}
    assert all(len({e["template_id"] for e in examples if e["record_id"] == r}) == variants for r in per_record)


def test_kinds_filter_and_few_shot_prompts_fit_the_input_budget(records):
    train = records("summarization", 60)
    for r in train[:20]:  # long exemplars would push the record's own dialogue past the truncation point
        r["fields"]["dialogue"] += "\nAgent: " + "a long explanation " * 40
    ctx = build_context(train, load_registry(), 13, 20, 3, kinds=("zero_shot", "few_shot"), max_input_chars=400)
    examples, _ = expand(train, "train", ctx)
    assert {e["template_kind"] for e in examples} == {"zero_shot", "few_shot"}
    by_id = {r["id"]: r for r in train}
    for e in (e for e in examples if e["template_kind"] == "few_shot"):
        own = by_id[e["record_id"]]["fields"]["dialogue"]
        assert own in e["inputs"]  # the record's own input is always whole
        others = [r["fields"]["summary"] for rid, r in by_id.items() if rid != e["record_id"]]
        assert len(e["inputs"]) <= 400 or not any(s in e["inputs"] for s in others)  # fits, or no exemplar left
    unlimited = build_context(train, load_registry(), 13, 20, 3, kinds=("few_shot",))
    longest = max(len(e["inputs"]) for e in expand(train, "train", unlimited)[0])
    assert longest > 400  # without the budget the same prompts are longer


def test_eval_examples_carry_every_reference_target_first_train_none(records):
    train = records("summarization", 5)
    rec = {**records("summarization", 1)[0], "id": "dialogsum:test_1", "split": "test"}
    rec["fields"] = {**rec["fields"], "summary": "A asks B.",
                     "summaries": ["A asks B.", " B answers A. ", "", "They talk."]}
    plain = {**rec, "id": "samsum:2", "fields": {k: v for k, v in rec["fields"].items() if k != "summaries"}}
    examples, _ = expand([rec, plain], "test", context(train, only=["summarization"]))
    assert [e["references"] for e in examples] == [["A asks B.", "B answers A.", "They talk."], ["A asks B."]]
    assert examples[0]["targets"] == "A asks B."
    train_rows, _ = expand(train, "train", context(train, only=["summarization"]))
    assert all("references" not in e for e in train_rows)  # written as null
