"""templates.mixture.replay.from: the examples a registered version was trained on, found through its lineage
(components/common/lineage.py): three rounds, each replaying the champion, replay of replay included."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from components.common import tracking
from components.common.lineage import (REPLAY_FROM_TAG, TEMPLATES_URI_TAG, LineageError, check_same_version,
                                       resolve_replay)
from components.common.schemas import read_rows, stream_of
from components.common.storage import join
from components.templates.core import run_templates
from tests.components.templates.test_core import with_templates, write_records


def from_champion(cfg, ratio: float = 0.5, name: str = "lineage"):
    replay = cfg.templates.mixture.replay.model_copy(update={"from_": "champion", "ratio": ratio})
    cfg = with_templates(cfg, mixture=cfg.templates.mixture.model_copy(update={"replay": replay, "total_examples": 100}))
    return cfg.model_copy(update={"registry": cfg.registry.model_copy(update={"model_name": name})})


def register(client: MlflowClient, name: str, templates_uri: str | None, replayed: str | None = None) -> str:
    """A version as register writes it (the lineage tags only), made champion."""
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - already there
        pass
    tags = {TEMPLATES_URI_TAG: templates_uri, REPLAY_FROM_TAG: replayed or "none"} if templates_uri else {}
    mv = client.create_model_version(name, source=f"s3://b/{name}/{templates_uri}/model", tags=tags)
    client.set_registered_model_alias(name, "champion", mv.version)
    return str(mv.version)


def test_three_rounds_replay_every_earlier_round_at_its_weight(tiny_config, store, records):
    tracking.setup(tiny_config)
    client, cfg = MlflowClient(), from_champion(tiny_config)
    # Round 1: no champion yet, so nothing to replay, and the run says why.
    r1_records = write_records(store, join(store.root, "rec1"), {"summarization": 40, "ner": 40}, records, "v1")
    r1 = run_templates(cfg, r1_records, join(store.root, "runs", "r1"), "r1")
    assert r1.replay["uri"] is None and r1.replay["version"] is None and "first round" in r1.replay["note"]
    v1 = register(client, "lineage", r1.examples_uri)

    r2_records = write_records(store, join(store.root, "rec2"), {"code_translation": 40}, records, "v2")
    r2 = run_templates(cfg, r2_records, join(store.root, "runs", "r2"), "r2")
    assert r2.replay["uri"] == r1.examples_uri and r2.replay["version"] == v1 == "1"
    v2 = register(client, "lineage", r2.examples_uri, v1)

    r3_records = write_records(store, join(store.root, "rec3"), {"dialogue_topic": 40}, records, "v3")
    r3 = run_templates(cfg, r3_records, join(store.root, "runs", "r3"), "r3")
    assert r3.replay["version"] == v2 == "2"
    train = read_rows(store, join(r3.examples_uri, "train.parquet"))
    streams = {stream_of(r) for r in train}
    # Round 3 replays round 2's own examples and, one generation deeper, round 1's.
    assert {"replay/code_translation", "replay/replay/summarization", "replay/replay/ner"} <= streams
    manifest = store.get_json(join(r3.examples_uri, "manifest.json"))
    w2 = store.get_json(join(r2.examples_uri, "manifest.json"))["mixture"]["weights"]
    w3 = manifest["mixture"]["weights"]
    # Inside the replayed half, each of round 2's streams keeps the weight it had in round 2.
    total2 = sum(w2.values())
    for stream, w in w2.items():
        assert w3["replay/" + stream] == pytest.approx(0.5 * w / total2)
    assert manifest["dataset_versions"] == ["v3", "v2", "v1"]


def test_a_version_without_lineage_or_with_its_examples_gone_is_a_clear_error(tiny_config, store, records):
    tracking.setup(tiny_config)
    client, cfg = MlflowClient(), from_champion(tiny_config, name="no-lineage")
    register(client, "no-lineage", None)
    with pytest.raises(LineageError, match=r"no-lineage v1 has no lineage \(tag mixtune.templates_uri\)"):
        resolve_replay(cfg, store)
    gone = join(store.root, "runs", "deleted", "templates")
    register(client, "no-lineage", gone)
    with pytest.raises(LineageError, match=r"no-lineage v2 was trained on s3://.*/runs/deleted/templates, but "
                                           r"train.parquet, manifest.json is gone"):
        resolve_replay(cfg, store)
    # A version number that does not exist is named as such.
    numbered = cfg.templates.mixture.replay.model_copy(update={"from_": "9"})
    cfg9 = with_templates(cfg, mixture=cfg.templates.mixture.model_copy(update={"replay": numbered}))
    with pytest.raises(LineageError, match="replay.from '9': model 'no-lineage' has no version 9"):
        resolve_replay(cfg9, store)


def test_base_and_replay_must_read_the_same_version_of_one_alias(tiny_config):
    cfg = from_champion(tiny_config, name="m")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": "models:/m@champion"})})
    check_same_version(cfg, {"from": "champion", "version": "3"}, "3")  # agree: nothing to say
    with pytest.raises(LineageError, match=r"m@champion moved between the templates step \(v3: replay.from\) and "
                                           r"the shards step \(v4: model.base\)"):
        check_same_version(cfg, {"from": "champion", "version": "3"}, "4")
    with pytest.raises(LineageError, match=r"\(unset: replay.from\) and the shards step \(v1"):
        check_same_version(cfg, {"from": "champion", "version": None}, "1")  # promoted between the two steps
    pinned = cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": "models:/m/2"})})
    check_same_version(pinned, {"from": "champion", "version": "3"}, "2")  # a pinned version is the user's choice


def test_replay_from_and_examples_uri_are_exclusive():
    from components.common.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="set one of templates.mixture.replay.from"):
        parse_config({"templates": {"mixture": {"replay": {"from": "champion", "examples_uri": "s3://b/t"}}}})
    cfg = parse_config({"templates": {"mixture": {"replay": {"from": 3}}}})
    assert cfg.templates.mixture.replay.from_ == "3"
    # The config travels between steps as JSON and reads back the same.
    from components.common.config import config_from_json

    assert config_from_json(cfg.model_dump_json()).templates.mixture.replay.from_ == "3"
