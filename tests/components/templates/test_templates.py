from collections import Counter

import pytest

from components.common.config import SourceConfig
from components.common.schemas import read_rows
from components.common.storage import join
from components.ingest.core import run_ingest
from components.templates.core import expand, load_registry, pick, run_templates
from pipelines.sample_data import generate, write_jsonl


def test_registry_has_several_templates_per_task_with_placeholder():
    registry = load_registry()
    assert len(registry["summarization"]) >= 8
    assert all("{dialogue}" in t.template for t in registry["summarization"])


def test_bad_registry_is_refused():
    with pytest.raises(ValueError, match="placeholder"):
        load_registry("summarization:\n  - {id: a, template: 'no slot'}\n")
    with pytest.raises(ValueError, match="unique"):
        load_registry("t:\n  - {id: a, template: '{dialogue}'}\n  - {id: a, template: 'x {dialogue}'}\n")


def test_pick_is_deterministic_stable_and_spread():
    templates = load_registry()["summarization"]
    ids = [f"s:{i}" for i in range(800)]
    first = [pick(templates, 13, i, 1)[0].id for i in ids]
    assert first == [pick(templates, 13, i, 1)[0].id for i in ids]
    assert [pick(templates, 14, i, 1)[0].id for i in ids] != first  # the seed matters
    usage = Counter(first)
    assert len(usage) == len(templates) and min(usage.values()) > 50  # every template used
    three = pick(templates, 13, "s:1", 3)
    assert len({t.id for t in three}) == 3 and three[0].id == first[1]


def test_expand_variants_only_for_train(tiny_config):
    cfg = tiny_config.model_copy(update={"templates": tiny_config.templates.model_copy(update={"variants_per_record": 3})})
    recs = [{"id": "s:1", "task": "summarization", "dialogue": "A: hi\nB: yo", "target": "They greet."}]
    train, test = expand(recs, "train", load_registry(), cfg), expand(recs, "test", load_registry(), cfg)
    assert len(train) == 3 and len(test) == 1
    assert all("A: hi\nB: yo" in e["inputs"] and e["targets"] == "They greet." for e in train + test)
    with pytest.raises(KeyError, match="no templates"):
        expand([{**recs[0], "task": "unknown"}], "train", load_registry(), cfg)


def test_run_templates_on_s3(tiny_config, store, tmp_path):
    path = write_jsonl(generate(50, seed=1), tmp_path / "c.jsonl")
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(
        update={"sources": [SourceConfig(path=str(path))]})})
    root = join(store.root, "runs", "t")
    ing = run_ingest(cfg, root, "t")
    res = run_templates(cfg, ing.records_uri, root, "t")
    assert res.split_rows == ing.split_rows and res.dataset_version == ing.dataset_version
    rows = read_rows(store, join(root, "templates", "train.parquet"))
    assert len(rows) == ing.split_rows["train"]
    assert {r["template_id"] for r in rows} <= {t.id for t in load_registry()["summarization"]}
