import copy

import pytest
import yaml

from components.templates.registry import KINDS, RegistryError, load_registry, parse_registry

TASKS = {"summarization": ("dialogue", "summary"), "dialogue_topic": ("dialogue", "topic"),
         "review_rating": ("review", "rating"), "ner": ("sentence", "entities"), "code_translation": ("java", "cs")}


def valid_task() -> dict:
    """A minimal task that passes every rule: 6 zero-shot, 1 few-shot, 1 options, 2 inverse."""
    t = [{"id": f"z{i}", "kind": "zero_shot", "inputs": f"Q{i}: {{x}}", "targets": "{y}"} for i in range(6)]
    t += [{"id": "f1", "kind": "few_shot", "inputs": "{exemplars}\n\nX: {x}\nY:", "targets": "{y}"},
          {"id": "o1", "kind": "options", "inputs": "{x}\n{options}", "targets": "{y}"},
          {"id": "i1", "kind": "inverse", "inputs": "Make an x for {y}", "targets": "{x}"},
          {"id": "i2", "kind": "inverse", "inputs": "{y} -> x?", "targets": "{x}"}]
    return {"requires": ["x", "y"], "eval_template": "z0", "options": ["a", "b"], "few_shot": "X: {x}\nY: {y}",
            "templates": t}


def refused(task: dict, match: str, name: str = "t") -> str:
    with pytest.raises(RegistryError, match=match) as e:
        parse_registry({name: task}, "my.yaml")
    assert str(e.value).startswith("my.yaml: invalid template registry")
    return str(e.value)


def test_packaged_registry_has_the_five_tasks_with_enough_templates():
    registry = load_registry()
    assert set(registry) == set(TASKS)
    for name, task in registry.items():
        kinds = [t.kind for t in task.templates]
        assert task.requires == TASKS[name]
        assert len(kinds) >= 10 and kinds.count("inverse") >= 2, name
        assert kinds.count("few_shot") >= 1 and kinds.count("zero_shot") >= 1, name
        assert task.template(task.eval_template).kind == "zero_shot"
        assert (kinds.count("options") >= 1) == (task.options is not None), name
        # Inverse templates produce an input field, i.e. run the task backwards.
        forward = task.template(task.eval_template).targets
        assert all(t.targets != forward for t in task.templates if t.kind == "inverse"), name
    assert registry["review_rating"].options.values == ("1", "2", "3", "4", "5")
    assert registry["dialogue_topic"].options.from_field == "topic"
    assert registry["dialogue_topic"].options.distractors == 3


def test_a_valid_task_loads_from_a_users_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"mytask": valid_task()}))
    registry = load_registry(str(path))
    assert list(registry) == ["mytask"] and registry["mytask"].label == "y"
    with pytest.raises(RegistryError, match="not found"):
        load_registry(str(tmp_path / "absent.yaml"))
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(text="a: [", where="bad.yaml")


def test_unknown_placeholder_names_task_and_template():
    task = valid_task()
    task["templates"][2]["inputs"] = "Q: {x} and {colour}"
    msg = refused(task, r"task 't' template 'z2': unknown placeholder \{colour\} in inputs")
    assert "requires ['x', 'y']" in msg
    task = valid_task()
    task["templates"][2]["targets"] = "{options}"
    refused(task, r"template 'z2': unknown placeholder \{options\} in targets")


def test_unknown_kind():
    task = valid_task()
    task["templates"][1]["kind"] = "chain_of_thought"
    refused(task, "template 'z1': unknown kind 'chain_of_thought'")
    assert set(KINDS) == {"zero_shot", "few_shot", "options", "inverse"}


def test_skip_when_names_required_fields():
    task = valid_task()
    task["templates"][8]["skip_when"] = {"y": ["none", "n/a"]}
    assert parse_registry({"t": task})["t"].template("i1").skips({"y": "n/a"})
    task["templates"][8]["skip_when"] = {"colour": "red"}
    refused(task, "template 'i1': skip_when must map fields from requires")


def test_duplicate_ids_within_and_across_tasks():
    task = valid_task()
    task["templates"][1]["id"] = "z0"
    refused(task, "template 'z0': duplicate id")
    with pytest.raises(RegistryError, match="template 'z0': duplicate id \\(also in task 'a'\\)"):
        parse_registry({"a": valid_task(), "b": valid_task()})


def test_eval_template_must_exist_and_be_zero_shot():
    task = valid_task()
    task["eval_template"] = "nope"
    refused(task, "eval_template 'nope' is not one of its templates")
    task["eval_template"] = "f1"
    refused(task, "eval_template 'f1' is few_shot, must be zero_shot")


def test_options_templates_only_on_tasks_with_options():
    task = valid_task()
    del task["options"]
    refused(task, "template 'o1': an options template on a task without `options`")
    task = valid_task()
    task["templates"][7]["targets"] = "The answer is {y}"
    refused(task, "template 'o1': an options template's targets must be one field")
    task = valid_task()
    task["options"] = {"from_field": "colour", "distractors": 3}
    refused(task, "options.from_field 'colour' must be one of requires")
    task["options"] = {"from_field": "y", "distractors": 0}
    refused(task, "options.distractors must be an integer >= 1")
    task["options"] = ["a"]
    refused(task, "at least 2 distinct labels")


def test_special_placeholders_belong_to_their_kinds():
    task = valid_task()
    task["templates"][6]["inputs"] = "X: {x}\nY:"  # few_shot without {exemplars}
    refused(task, r"template 'f1': \{exemplars\} belongs in few_shot templates")
    task = valid_task()
    task["templates"][0]["inputs"] = "{x}\n{options}"
    refused(task, r"template 'z0': \{options\} belongs in options templates")
    task = valid_task()
    task["few_shot"] = "X: {x}\nZ: {z}"
    refused(task, r"unknown placeholder \{z\} in few_shot")
    del task["few_shot"]
    refused(task, "few_shot templates need a `few_shot` exemplar format")


@pytest.mark.parametrize("kind,rule", [
    (None, "has 9 templates, needs at least 10"),
    ("inverse", "has 1 inverse templates, needs at least 2"),
    ("few_shot", "has 0 few_shot templates, needs at least 1"),
    ("options", "has 0 options templates, needs at least 1"),
])
def test_minimum_template_counts(kind, rule):
    task = valid_task()
    drop = next(i for i, t in enumerate(task["templates"]) if kind is None or t["kind"] == kind)
    if kind is None:
        task["templates"].pop(drop)
    else:
        task["templates"][drop] = {"id": "extra", "kind": "zero_shot", "inputs": "{x}?", "targets": "{y}"}
    refused(task, rule)


def test_every_task_needs_a_zero_shot_template():
    task = valid_task()
    for t in task["templates"]:
        if t["kind"] == "zero_shot":
            t["kind"] = "inverse"
            t["inputs"], t["targets"] = f"{t['id']} {{y}}", "{x}"
    refused(task, "has 0 zero_shot templates, needs at least 1")


def test_unknown_keys_and_all_problems_reported_at_once():
    task = copy.deepcopy(valid_task())
    task["require"] = ["x"]
    task["templates"][0]["input"] = task["templates"][0].pop("inputs")
    task["templates"][3]["kind"] = "zeroshot"
    msg = refused(task, "unknown keys \\['require'\\]")
    assert "template 'z0': missing keys ['inputs'], unknown keys ['input']" in msg
    assert "template 'z3': unknown kind 'zeroshot'" in msg
    with pytest.raises(RegistryError, match="non-empty mapping"):
        parse_registry([])
