"""Content-keyed reuse: first finisher's entry stands, stale entries are dropped, keys follow content."""
from __future__ import annotations

from components.common import reuse
from components.common.storage import join


def test_key_is_stable_and_follows_every_part():
    a = reuse.content_key("train", shards=[("s", "abc", 3)], train={"lr": 1})
    assert a == reuse.content_key("train", train={"lr": 1}, shards=[("s", "abc", 3)])  # order-free
    assert a != reuse.content_key("train", shards=[("s", "abd", 3)], train={"lr": 1})
    assert a != reuse.content_key("train", shards=[("s", "abc", 3)], train={"lr": 2})
    assert a != reuse.content_key("shards", shards=[("s", "abc", 3)], train={"lr": 1})


def test_code_digest_covers_the_components_package():
    digest = reuse.code_digest()
    assert len(digest) == 64 and digest == reuse.code_digest()
    assert (reuse.PACKAGE / "common" / "reuse.py").exists()


def test_first_publisher_wins_and_lookup_checks_the_outputs(store):
    key = reuse.content_key("train", test="first-wins")
    assert reuse.lookup(store, "train", key, lambda o: True) is None
    assert reuse.publish(store, "train", key, {"model_uri": "s3://b/runs/a/model"}, "run-a")
    assert not reuse.publish(store, "train", key, {"model_uri": "s3://b/runs/b/model"}, "run-b")
    hit = reuse.lookup(store, "train", key, lambda o: True)
    assert hit["pipeline_run"] == "run-a" and hit["outputs"]["model_uri"].endswith("runs/a/model")


def test_an_entry_whose_artifacts_are_gone_is_dropped(store):
    key = reuse.content_key("train", test="stale")
    reuse.publish(store, "train", key, {"model_uri": join(store.root, "runs", "gone", "model")}, "gone")
    assert reuse.lookup(store, "train", key, lambda o: False) is None
    assert not store.exists(reuse.index_uri(store, "train", key))
    assert reuse.publish(store, "train", key, {"model_uri": "s3://b/runs/new/model"}, "new")  # now this run's
