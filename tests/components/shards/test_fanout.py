"""The fanned-out shards step (prepare -> partitions -> merge) on real S3, called directly and through
kfp.local's ParallelFor + Collected."""
# No `from __future__ import annotations`: KFP reads the test pipeline's real annotations.

import pytest

from components.common.storage import join
from components.shards.core import write_shards
from components.shards.fanout import merge_fanout, partial_uri, prepare_fanout, run_partition
from tests.components.shards.test_partition import assert_same_content


def test_fanout_equals_one_task(shards_config, store, examples_uri, trained_tokenizer_dir):
    one = shards_config(rows_per_shard=40, workers=1, tokenizer=trained_tokenizer_dir)
    whole = write_shards(one, examples_uri, join(store.root, "runs", "one"), store).manifest
    cfg = shards_config(rows_per_shard=40, workers=1, partitions=3, tokenizer=trained_tokenizer_dir)
    root = join(store.root, "runs", "fan")
    prepare_fanout(cfg, examples_uri, root, store)
    refs = [run_partition(cfg, root, k, store) for k in (2, 0, 1)]  # any order, as a ParallelFor finishes
    merged = merge_fanout(root, refs, store).manifest
    assert store.get_json(join(root, "shards", "manifest.json")) == merged
    assert merged["partitions"] == 3 and merged["tokenize"]["workers"] == 3
    assert merged["mixture_weights"] == whole["mixture_weights"]
    assert merged["vocab_size"] == whole["vocab_size"]
    assert_same_content(store, whole, merged)


def test_fanout_refuses_missing_changed_or_stray_partitions(shards_config, store, examples_uri,
                                                           trained_tokenizer_dir):
    cfg = shards_config(workers=1, partitions=2, tokenizer=trained_tokenizer_dir)
    root = join(store.root, "runs", "bad")
    prepare_fanout(cfg, examples_uri, root, store)
    refs = [run_partition(cfg, root, k, store) for k in (0, 1)]
    with pytest.raises(ValueError, match="got 1 partition results, the plan has 2"):
        merge_fanout(root, refs[:1], store)
    with pytest.raises(ValueError, match="partition 2 is outside the plan's 2 partitions"):
        run_partition(cfg, root, 2, store)
    store.put_bytes(partial_uri(root, 1, 2), store.get_bytes(partial_uri(root, 0, 2)))
    with pytest.raises(ValueError, match=r"partial-00001-of-00002.json changed after"):
        merge_fanout(root, refs, store)
    assert not store.exists(join(root, "shards", "manifest.json"))
    # A new attempt starts clean: the old partials are gone before any partition runs.
    prepare_fanout(cfg, examples_uri, root, store)
    assert not store.exists(partial_uri(root, 0, 2))


@pytest.mark.slow
def test_parallel_for_through_kfp_local(shards_config, store, examples_uri, trained_tokenizer_dir, tmp_path):
    """The DAG's fan-out in kfp.local: ParallelFor over partition tasks, then Collected into the merge."""
    import kfp.local
    from kfp import dsl

    from components.shards.component import build_fanout

    cfg = shards_config(rows_per_shard=40, workers=1, partitions=2, tokenizer=trained_tokenizer_dir)
    prepare_op, partition_op, merge_op = build_fanout("python:3.11")
    root = join(store.root, "runs", "kfp")

    @dsl.pipeline(name="shards-fanout")
    def fanout(config_json: str, pipeline_run: str, artifact_root: str, examples_uri: str) -> str:
        prepare = prepare_op(config_json=config_json, pipeline_run=pipeline_run, artifact_root=artifact_root,
                             examples_uri=examples_uri)
        with dsl.ParallelFor(items=[str(k) for k in range(cfg.shards.partitions)]) as k:
            part = partition_op(config_json=config_json, pipeline_run=pipeline_run, artifact_root=artifact_root,
                                partition=k).after(prepare)
        return merge_op(config_json=config_json, pipeline_run=pipeline_run, artifact_root=artifact_root,
                        partials=dsl.Collected(part.output)).outputs["shards_uri"]

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    run = fanout(config_json=cfg.model_dump_json(), pipeline_run="fanout-test", artifact_root=root,
                 examples_uri=examples_uri)
    assert run.output == join(root, "shards")
    manifest = store.get_json(join(root, "shards", "manifest.json"))
    assert manifest["partitions"] == 2
    assert manifest["splits"]["train"]["rows"] == 600
    assert store.exists(partial_uri(root, 0, 2)) and store.exists(partial_uri(root, 1, 2))


def test_fanout_prepare_pins_a_registered_base_from_the_configured_registry(
        shards_config, store, examples_uri, trained_tokenizer_dir, register_champion, tmp_path):
    """The prepare task runs outside a step's MLflow run: it must still read the registry the config names."""
    import mlflow

    cfg = shards_config(workers=1, partitions=2)
    uri = register_champion(cfg, trained_tokenizer_dir, "fan-base")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/elsewhere.db")  # what a fresh pod would default to
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": "models:/fan-base@champion"})})
    root = join(store.root, "runs", "fan-registered")
    plan = store.get_json(prepare_fanout(cfg, examples_uri, root, store))
    assert plan["header"]["base_model"]["version"] == "1" and plan["header"]["base_model"]["uri"] == uri
