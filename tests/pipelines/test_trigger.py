"""pipelines/trigger.py on a real S3 server: the batch of new files, its exactly-once claim (shared by
`mixtune submit --if-new-data` and `mixtune watch`), and the config that narrows a run to the batch."""
from __future__ import annotations

import pytest

from components.common.config import ConfigError, MixtuneConfig, config_from_json, parse_config
from components.common.storage import Store, join
from components.ingest.catalog import list_objects
from pipelines.submit import submit_if_new
from pipelines.trigger import (TriggerError, batch_config, claim, fingerprint, make_batch, next_batch,
                               source_listing, watched_listing)

CHAT = b'{"conversation_id": "1"}\n'


def trigger_config(base: MixtuneConfig, sources: list[dict], **trigger) -> MixtuneConfig:
    """`base` with these sources and trigger settings, validated as a config file would be."""
    raw = base.model_dump(mode="json", by_alias=True)
    raw["data"]["sources"] = sources
    raw["cluster"]["trigger"].update({"settle_seconds": 0, **trigger})
    return parse_config(raw)


@pytest.fixture
def two_sources(tiny_config, store):
    """Chat logs uploaded under incoming/ (watched) next to public task data (read in full every run)."""
    incoming, public = join(store.root, "incoming", "chats"), join(store.root, "public", "dialogsum")
    for name in ("a.jsonl", "b.jsonl"):
        store.put_bytes(join(incoming, name), CHAT)
    store.put_bytes(join(public, "train.jsonl"), b'{"id": "p1"}\n')
    cfg = trigger_config(tiny_config, [
        {"path": incoming + "/", "format": "chatlog", "name": "support-chats"},
        {"path": public + "/", "format": "dialogsum", "name": "dialogsum", "tasks": ["summarize"]},
    ], watch_sources=["support-chats"], new_files_only=True)
    return cfg, incoming, public


def names(batch) -> list[str]:
    return [o.name.rsplit("/", 1)[-1] for o in batch.files]


def test_new_files_only_batches_hold_each_file_once(two_sources, store):
    cfg, incoming, public = two_sources
    first = next_batch(cfg, store)
    assert names(first) == ["a.jsonl", "b.jsonl"]  # the public data is not watched: never in a batch
    assert first.fingerprint == fingerprint(first.files)
    assert claim(store, first, {"runner": "test"})
    body = store.get_json(first.claim_uri)
    assert body["files"] == [o.name for o in first.files] and body["runner"] == "test" and body["by"]

    assert next_batch(cfg, store) is None  # claimed: nothing new
    store.put_bytes(join(incoming, "c.jsonl"), CHAT)
    second = next_batch(cfg, store)
    assert names(second) == ["c.jsonl"] and second.claim_uri != first.claim_uri

    store.put_bytes(join(public, "more.jsonl"), b'{"id": "p2"}\n')  # unwatched: starts nothing by itself
    assert claim(store, second)
    assert next_batch(cfg, store) is None


def test_batch_config_narrows_the_watched_source_to_exactly_the_batch(two_sources, store):
    cfg, incoming, public = two_sources
    assert claim(store, next_batch(cfg, store))
    store.put_bytes(join(incoming, "c.jsonl"), CHAT)
    store.put_bytes(join(incoming, "nested", "d.jsonl"), CHAT)
    batch = next_batch(cfg, store)
    run_cfg = batch_config(cfg, batch)

    watched = [s for s in run_cfg.data.sources if s.name == "support-chats"]
    listed = sorted(o.name for s in watched for o in list_objects(s, store))
    assert listed == [o.name for o in batch.files] == [join(incoming, "c.jsonl"), join(incoming, "nested", "d.jsonl")]
    original = cfg.data.sources[0]
    assert all(s.model_dump(exclude={"path"}) == original.model_dump(exclude={"path"}) for s in watched)
    # The public source is unchanged: a run reads all of it, whatever the batch.
    assert [s for s in run_cfg.data.sources if s.name == "dialogsum"] == [cfg.data.sources[1]]
    assert [o.name for o in list_objects(run_cfg.data.sources[-1], store)] == [join(public, "train.jsonl")]
    # The narrowed config is still a valid config (steps re-read it from JSON).
    assert MixtuneConfig.model_validate_json(run_cfg.model_dump_json()) == run_cfg
    # Without new_files_only a run reads every file, as before.
    full = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"trigger": cfg.cluster.trigger.model_copy(
        update={"new_files_only": False})})})
    assert batch_config(full, batch) is full


def test_a_watched_source_without_new_files_leaves_the_run_config_valid(two_sources, store):
    cfg, incoming, public = two_sources
    more = join(store.root, "incoming", "emails")
    store.put_bytes(join(more, "e.jsonl"), CHAT)
    sources = [s.model_dump(mode="json") for s in cfg.data.sources] + [{"path": more + "/", "name": "emails"}]
    cfg = trigger_config(cfg, sources, watch_sources=["support-chats", "emails"])
    assert claim(store, make_batch(cfg, store, {2: watched_listing(cfg, store)[2]}))  # e.jsonl is run
    batch = next_batch(cfg, store)
    assert names(batch) == ["a.jsonl", "b.jsonl"]
    run_cfg = batch_config(cfg, batch)
    assert [s.name for s in run_cfg.data.sources] == ["support-chats", "support-chats", "dialogsum"]
    assert run_cfg.cluster.trigger.watch_sources == ["support-chats"]
    assert config_from_json(run_cfg.model_dump_json()) == run_cfg  # what each step does with it


def test_a_local_file_name_with_glob_characters_is_narrowed_to_itself(tiny_config, store, tmp_path):
    (tmp_path / "a1.jsonl").write_bytes(CHAT)
    (tmp_path / "a[1].jsonl").write_bytes(CHAT)  # as a glob, a[1] matches a1
    cfg = trigger_config(tiny_config, [{"path": str(tmp_path / "*.jsonl"), "name": "local"}], new_files_only=True)
    first = make_batch(cfg, store, {0: list_objects(cfg.data.sources[0], store)[:1]})  # a1.jsonl only
    assert claim(store, first)
    batch = next_batch(cfg, store)
    assert names(batch) == ["a[1].jsonl"]
    [narrowed] = batch_config(cfg, batch).data.sources
    assert [o.name for o in list_objects(narrowed, store)] == [str(tmp_path / "a[1].jsonl")]


def test_an_s3_key_that_is_also_a_prefix_cannot_be_narrowed(two_sources, store):
    cfg, incoming, _ = two_sources
    store.put_bytes(join(incoming, "a.jsonl", "inner.jsonl"), CHAT)  # a source naming a.jsonl would list this
    with pytest.raises(TriggerError, match=r"a\.jsonl is an object and also a prefix"):
        next_batch(cfg, store)


def test_two_batches_sharing_files_are_never_both_claimed(two_sources, store):
    """One watcher listed before an upload, another after: different batches, the same older files."""
    cfg, incoming, _ = two_sources
    before = make_batch(cfg, store, watched_listing(cfg, store))
    store.put_bytes(join(incoming, "c.jsonl"), CHAT)
    after = make_batch(cfg, store, watched_listing(cfg, store))
    assert before.fingerprint != after.fingerprint
    assert claim(store, before)
    assert not claim(store, after) and not store.exists(after.claim_uri)  # withdrawn: a.jsonl is held
    assert names(next_batch(cfg, store)) == ["c.jsonl"]


def test_the_cluster_path_shares_the_claim(two_sources, store):
    cfg, incoming, _ = two_sources
    full = trigger_config(cfg, [s.model_dump(mode="json") for s in cfg.data.sources], watch_sources=None,
                          new_files_only=False)  # every source, every file, as before
    batch = next_batch(full, store)
    assert batch.fingerprint == fingerprint(source_listing(full, store))
    assert claim(store, batch, {"runner": "mixtune watch"})
    held = submit_if_new(full, client=object(), store=store)  # a sensor event for the same files
    assert not held.started and held.claim_uri == batch.claim_uri and held.files == 3

    # new_files_only on the cluster path: files a claim holds are not new, whichever path claimed them.
    assert next_batch(cfg, store) is None
    nothing = submit_if_new(cfg, client=object(), store=store)
    assert not nothing.started and "nothing to do" in nothing.reason


def test_watch_sources_must_name_sources(tiny_config, store):
    sources = [{"path": join(store.root, "incoming") + "/", "name": "support-chats"}, {"path": "x.jsonl"}]
    with pytest.raises(ConfigError, match=r"watch_sources names no source in data.sources: \['support'\]; "
                       r"the source names are \['support-chats'\]"):
        trigger_config(tiny_config, sources, watch_sources=["support"])
    with pytest.raises(ConfigError, match="watch_sources is empty"):
        trigger_config(tiny_config, sources, watch_sources=[])
    with pytest.raises(ConfigError, match="poll_seconds"):
        trigger_config(tiny_config, sources, poll_seconds=0)
    assert trigger_config(tiny_config, sources, watch_sources=["support-chats"]).cluster.trigger.watch_sources


def test_a_watched_source_without_files_is_a_clear_error(tiny_config, store):
    cfg = trigger_config(tiny_config, [{"path": join(store.root, "incoming", "none") + "/", "name": "chats"}])
    with pytest.raises(TriggerError, match="cannot list the sources: .*incoming/none"):
        next_batch(cfg, Store(cfg.storage))


def test_an_empty_watched_prefix_beside_one_with_uploads_is_no_error(two_sources, store):
    """Two watched prefixes (old-format and new-format chat logs); a round uploads to one of them only."""
    cfg, incoming, public = two_sources
    empty = join(store.root, "incoming", "tweets")
    sources = [s.model_dump(mode="json") for s in cfg.data.sources] + [
        {"path": empty + "/", "format": "tweetsumm", "name": "tweets"}]
    cfg = trigger_config(cfg, sources, watch_sources=["support-chats", "tweets"])
    batch = next_batch(cfg, store)
    assert names(batch) == ["a.jsonl", "b.jsonl"]
    assert [s.name for s in batch_config(cfg, batch).data.sources] == ["support-chats", "support-chats", "dialogsum"]
