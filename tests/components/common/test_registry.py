"""models:/ references: the forms accepted, and pinning an alias to one version for a whole run."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from components.common.config import MixtuneConfig, parse_models_uri
from components.common.registry import pin_model_ref
from components.common.storage import join
from components.common.tracking import MODEL_URI_TAG, setup


def test_models_uri_forms():
    assert parse_models_uri("models:/mixtune-summarizer@champion") == ("mixtune-summarizer", "champion")
    assert parse_models_uri("models:/m.v2/12") == ("m.v2", "12")
    for bad in ("models:/m", "models:/m@", "models:/m/", "models:/m/x1", "models:/@champion", "models:/m@1x",
                "models:/a/b/3"):
        with pytest.raises(ValueError, match="models:/<name>@<alias> or models:/<name>/<version>"):
            parse_models_uri(bad)


def test_config_refuses_a_malformed_registry_reference():
    with pytest.raises(ValueError, match=r"(?s)model.base.*'models:/summarizer': a registered model is"):
        MixtuneConfig.model_validate({"model": {"base": "models:/summarizer"}})
    cfg = MixtuneConfig.model_validate({"model": {"base": "models:/summarizer@champion"}})
    assert cfg.model.base == "models:/summarizer@champion"


def test_pin_resolves_an_alias_to_one_version(tiny_config, store, tmp_path):
    setup(tiny_config)
    client, name = MlflowClient(), "pinned"
    assert pin_model_ref("tiny") == {"ref": "tiny", "uri": "tiny", "registered_model": None, "version": None}
    with pytest.raises(ValueError, match="'pinned' has no alias 'champion'"):
        client.create_registered_model(name)
        pin_model_ref(f"models:/{name}@champion")
    uris = [join(store.root, "runs", r, "train", "model") for r in ("r1", "r2")]
    for uri in uris:
        client.create_model_version(name, source=uri, tags={MODEL_URI_TAG: uri})
    client.set_registered_model_alias(name, "champion", "1")
    pinned = pin_model_ref(f"models:/{name}@champion")
    assert pinned == {"ref": f"models:/{name}@champion", "uri": uris[0], "registered_model": name, "version": "1"}
    client.set_registered_model_alias(name, "champion", "2")
    assert pin_model_ref(f"models:/{name}@champion")["uri"] == uris[1]  # a new run sees the moved alias
    assert pin_model_ref(f"models:/{name}/1")["uri"] == uris[0]
    with pytest.raises(ValueError, match="has no version 9"):
        pin_model_ref(f"models:/{name}/9")


def test_a_version_kept_in_mlflow_is_pinned_by_its_immutable_uri_and_fetched_where_loaded(
        tiny_config, store, tmp_path, monkeypatch):
    """A version registered from run artifacts (runs:/ source) has no s3:// prefix. Shards and train may run
    in different pods, so the pin is models:/<name>/<version>, never a local path; local_copy fetches it."""
    import mlflow

    from components.common.hf import local_copy

    monkeypatch.setenv("MIXTUNE_CACHE", str(tmp_path / "cache"))
    exp_id = setup(tiny_config)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"d_model": 8}')
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_artifacts(str(model_dir), "model")
    client = MlflowClient()
    client.create_registered_model("from-run")
    client.create_model_version("from-run", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("from-run", "champion", "1")
    pinned = pin_model_ref("models:/from-run@champion")
    assert pinned == {"ref": "models:/from-run@champion", "uri": "models:/from-run/1",
                      "registered_model": "from-run", "version": "1"}
    local = local_copy(pinned["uri"], store)
    assert local.startswith(str(tmp_path / "cache" / "registry" / "from-run"))
    assert (tmp_path / "model" / "config.json").read_text() == open(f"{local}/config.json").read()


def test_initial_base_stands_in_while_the_alias_is_unset(tiny_config, store):
    """The retraining loop's first round: model.base names the champion, which does not exist yet."""
    from components.common.registry import first_round_config, pin_base

    setup(tiny_config)
    client, name = MlflowClient(), "loop"
    ref = f"models:/{name}@champion"
    cfg = tiny_config.model_copy(update={"model": tiny_config.model.model_copy(update={"base": ref,
                                                                                       "initial_base": "tiny"})})
    pinned = pin_base(ref, "tiny")
    assert pinned == {"ref": "tiny", "uri": "tiny", "registered_model": None, "version": None, "unset_alias": ref}
    assert first_round_config(cfg, pinned).model.base == "tiny"
    with pytest.raises(ValueError, match="'loop' has no alias 'champion'"):  # without initial_base: an error
        pin_base(ref)
    uri = join(store.root, "runs", "r1", "train", "model")
    client.create_registered_model(name)
    assert pin_base(ref, "tiny")["unset_alias"] == ref  # registered, never promoted: still the first round
    client.create_model_version(name, source=uri, tags={MODEL_URI_TAG: uri})
    client.set_registered_model_alias(name, "champion", "1")
    pinned = pin_base(ref, "tiny")  # the second round: the champion
    assert pinned["version"] == "1" and pinned["uri"] == uri and first_round_config(cfg, pinned) is cfg
