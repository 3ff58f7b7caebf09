import pytest
import yaml
from mlflow.tracking import MlflowClient

from components.common import tracking
from components.common.schemas import RECORD_SCHEMA, SPLITS, encode_fields, read_rows, write_table
from components.common.storage import join
from components.templates.core import registry_for, run_templates
from components.templates.registry import RegistryError, load_registry, read_registry_text

TASKS = ["summarization", "dialogue_topic", "review_rating", "ner", "code_translation"]


def write_records(store, uri: str, per_task: dict[str, int], make_records, version: str = "v-test") -> str:
    for split, share in zip(SPLITS, (1.0, 0.25, 0.25)):
        recs = [r for t, n in per_task.items() for r in make_records(t, max(1, int(n * share)), split)]
        recs.append({"id": f"src:useless-{split}", "source": "src", "split": split, "fields": {"note": "x"}})
        if split == "train":  # a topic record whose source only feeds dialogue_topic
            recs.append({**make_records("dialogue_topic", 1, start=999)[0], "tasks": ["dialogue_topic"]})
        # As ingest writes them: `tasks` is the source's restriction, None = every task.
        rows = [{**r, "fields": encode_fields(r["fields"]), "tasks": r.get("tasks")} for r in recs]
        write_table(store, join(uri, f"{split}.parquet"), rows, RECORD_SCHEMA)
    store.put_json(join(uri, "manifest.json"), {"dataset_version": version})
    return uri


def with_templates(cfg, **update):
    return cfg.model_copy(update={"templates": cfg.templates.model_copy(update=update)})


def test_run_templates_end_to_end(tiny_config, store, records):
    records_uri = write_records(store, join(store.root, "records"), {t: 40 for t in TASKS}, records)
    cfg = with_templates(tiny_config, mixture=tiny_config.templates.mixture.model_copy(
        update={"cap": 30, "total_examples": 150}))
    root = join(store.root, "runs", "r1")
    res = run_templates(cfg, records_uri, root, "r1")
    out = join(root, "templates")
    assert res.examples_uri == out and res.dataset_version == "v-test"
    manifest = store.get_json(join(out, "manifest.json"))
    assert manifest["split_rows"] == res.split_rows and manifest["template_counts"] == res.template_counts
    # train: 40 records per task (+40 summarization from topic records, +1 topic-only record), capped at 30
    assert res.tasks["summarization"]["available"] == 80 and res.tasks["dialogue_topic"]["available"] == 41
    # every example is kept (the loader samples by weight); the plan draws 30 from each capped task
    assert res.split_rows["train"] == sum(t["available"] for t in res.tasks.values()) == 241
    assert all(t["count"] == 30 for t in res.tasks.values())
    assert manifest["mixture"]["weights"] == pytest.approx({t: 0.2 for t in TASKS})
    assert res.unused_records["by_split"] == {"train": 1, "validation": 1, "test": 1}
    assert res.unused_records["sample"][0] == "src:useless-test"
    assert res.task_rows["validation"] == {"code_translation": 10, "dialogue_topic": 10, "ner": 10,
                                           "review_rating": 10, "summarization": 20}
    registry = load_registry()
    for split in SPLITS:
        rows = read_rows(store, join(out, f"{split}.parquet"))
        assert len(rows) == res.split_rows[split] and len({r["id"] for r in rows}) == len(rows)
        assert all(r["template_kind"] == registry[r["task"]].template(r["template_id"]).kind for r in rows)
        if split != "train":
            assert {r["template_id"] for r in rows} == {t.eval_template for t in registry.values()}
    train = read_rows(store, join(out, "train.parquet"))
    topic_only = [r for r in train if r["record_id"] == "src:dialogue_topic-999"]
    assert {r["task"] for r in topic_only} <= {"dialogue_topic"}  # the source's `tasks` is honoured
    assert len({r["template_kind"] for r in train}) == 4

    tracking.setup(cfg)
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    run = client.search_runs([exp.experiment_id], "tags.`mixtune.step` = 'templates'")[0]
    assert run.data.tags["mixtune.dataset_version"] == "v-test"
    assert run.data.metrics["examples_train"] == 241 and run.data.metrics["mixture_count_ner"] == 30
    assert run.data.metrics["mixture_weight_ner"] == pytest.approx(0.2)
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "templates")}
    assert arts == {"templates/registry.json", "templates/mixture.json"}


def test_replay_from_a_previous_run_and_missing_source(tiny_config, store, records):
    records_uri = write_records(store, join(store.root, "records"), {"summarization": 40, "ner": 40}, records)
    first = run_templates(tiny_config, records_uri, join(store.root, "runs", "old"), "old")
    new_uri = write_records(store, join(store.root, "records2"), {"code_translation": 60}, records, "v2")
    replay = tiny_config.templates.mixture.replay.model_copy(
        update={"examples_uri": first.examples_uri, "ratio": 0.25})
    cfg = with_templates(tiny_config, mixture=tiny_config.templates.mixture.model_copy(
        update={"replay": replay, "total_examples": 61}))
    res = run_templates(cfg, new_uri, join(store.root, "runs", "new"), "new")
    train = read_rows(store, join(res.examples_uri, "train.parquet"))
    replayed = [r for r in train if r["id"].startswith("replay:")]
    old_train = read_rows(store, join(first.examples_uri, "train.parquet"))
    assert len(replayed) == res.replay["examples"] == len(old_train) and len(train) == 61 + len(old_train)
    assert res.replay["planned_draws"] == 15  # 0.25 of the budget of 60 + 1 topic
    assert {r["task"] for r in replayed} == {r["task"] for r in old_train} >= {"summarization", "ner"}
    weights = store.get_json(join(res.examples_uri, "manifest.json"))["mixture"]["weights"]
    assert sum(w for s, w in weights.items() if s.startswith("replay/")) == pytest.approx(0.25)
    # Both dataset versions the mixture draws from are recorded, for the model's lineage.
    assert store.get_json(join(res.examples_uri, "manifest.json"))["dataset_versions"] == ["v2", "v-test"]
    assert sum(res.replay["by_task"].values()) == 15 and set(res.replay["by_task"]) <= {r["task"] for r in old_train}
    assert res.tasks["code_translation"]["count"] == 45 and res.tasks["dialogue_topic"]["count"] == 1
    missing = replay.model_copy(update={"examples_uri": join(store.root, "runs", "nowhere", "templates")})
    cfg = with_templates(tiny_config, mixture=tiny_config.templates.mixture.model_copy(update={"replay": missing}))
    with pytest.raises(FileNotFoundError, match="replay: s3://.*/runs/nowhere/templates/train.parquet not found; point examples_uri"):
        run_templates(cfg, new_uri, join(store.root, "runs", "x"), "x")


def test_registry_from_config_local_or_s3_and_task_filter(tiny_config, store, tmp_path, records):
    text = yaml.safe_dump({"ner": yaml.safe_load(read_registry_text()[0])["ner"]})
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    assert list(registry_for(with_templates(tiny_config, registry=str(path)), store)) == ["ner"]
    uri = join(store.root, "registry.yaml")
    store.put_bytes(uri, text.encode())
    assert list(registry_for(with_templates(tiny_config, registry=uri), store)) == ["ner"]
    with pytest.raises(RegistryError, match="not found"):
        registry_for(with_templates(tiny_config, registry=uri + ".missing"), store)
    with pytest.raises(RegistryError, match=r"templates.tasks: unknown tasks \['summarisation'\]"):
        registry_for(with_templates(tiny_config, tasks=["summarisation"]), store)
    records_uri = write_records(store, join(store.root, "records"), {t: 10 for t in TASKS}, records)
    padded = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"packing": False})})
    res = run_templates(with_templates(padded, tasks=["ner", "review_rating"]), records_uri,
                        join(store.root, "runs", "f"), "f")
    # By default the plan is the training budget: max_steps x micro batch x accumulation x processes
    # examples when padded (packed: test_packed_budget_counts_examples_per_row).
    t = tiny_config.train
    budget = t.max_steps * t.micro_batch_size * t.gradient_accumulation_steps * t.num_processes
    assert set(res.tasks) == {"ner", "review_rating"}
    assert res.split_rows["train"] == sum(v["available"] for v in res.tasks.values())
    assert {k: v["count"] for k, v in res.tasks.items()} == {"ner": budget // 2, "review_rating": budget // 2}


def test_packed_budget_counts_examples_per_row(tiny_config):
    from components.templates.core import training_budget

    t, m = tiny_config.train, tiny_config.model  # rows of 192/64 tokens
    rows = t.max_steps * t.micro_batch_size * t.gradient_accumulation_steps * t.num_processes
    short = [{"inputs": "x" * 4 * 47, "targets": "y" * 4 * 7}] * 5  # 48/8 tokens: 4 per row by the source
    assert training_budget(tiny_config, short) == round(rows * 0.9 * 4)
    whole = [{"inputs": "x" * 4000, "targets": "y" * 900}]  # longer than a row: one per row, never fewer
    assert training_budget(tiny_config, whole) == rows
    padded = tiny_config.model_copy(update={"train": t.model_copy(update={"packing": False})})
    assert training_budget(padded, short) == rows
    causal = tiny_config.model_copy(update={"model": m.model_copy(update={"architecture": "causal"})})
    assert training_budget(causal, short) == round(rows * 0.9 * 256 / 56)  # one budget of 192 + 64
