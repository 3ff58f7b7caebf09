import pytest

from components.common.config import ConfigError, MixtuneConfig, config_from_json, load_config


def test_defaults_are_valid():
    cfg = load_config(None)
    assert cfg.model.base == "tiny"
    assert cfg.data.sources[0].path == "sample"


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and "train.max_stepz" in str(e.value)
    assert f"train.max_stepz: unknown key; did you mean train.max_steps? (from {path} line 2)" in str(e.value)


def test_an_unknown_key_names_its_origin_and_the_nearest_valid_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  sources:\n    - path: a.jsonl\n      formatt: json\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, {"registry.gate.max_dorp": 2, "templates.mixture.replay.from_champion": "x"})
    text = str(e.value)
    assert f"data.sources.0.formatt: unknown key; did you mean data.sources.0.format? (from {path} line 4)" in text
    assert "registry.gate.max_dorp: unknown key; did you mean registry.gate.max_drop? (from --set registry.gate.max_dorp)" in text
    assert "templates.mixture.replay.from_champion: unknown key" in text  # nothing close: no suggestion
    with pytest.raises(ConfigError, match=r"--set data.sources.0.path: data.sources is a list, not a section"):
        load_config(path, {"data.sources.0.path": "b.jsonl"})


def test_bad_values_are_all_reported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_steps: 0\nevaluate:\n  batch_size: many\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "train.max_steps" in str(e.value) and "evaluate.batch_size" in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_and_json_round_trip():
    cfg = load_config(None, {"train.max_steps": 7, "storage.prefix": "/team/a/"})
    assert cfg.train.max_steps == 7 and cfg.storage.prefix == "team/a"
    assert config_from_json(cfg.model_dump_json()) == cfg


def test_prefix_cannot_climb():
    with pytest.raises(ConfigError):
        load_config(None, {"storage.prefix": "a/../b"})


def test_fractions_must_leave_training_data():
    with pytest.raises(ConfigError):
        load_config(None, {"data.validation_fraction": 0.45, "data.test_fraction": 0.46})
    assert isinstance(load_config(None), MixtuneConfig)


def test_gate_settings_are_checked_against_the_scored_tasks():
    cfg = load_config(None, {"evaluate.tasks": ["summarization", "ner"],
                             "registry.gate.max_drop_per_task": {"ner": 3.0}})
    assert cfg.primary_task == "summarization" and cfg.registry.gate.max_drop == 1.0
    with pytest.raises(ConfigError, match="primary_task 'ner2' is not in evaluate.tasks"):
        load_config(None, {"registry.gate.primary_task": "ner2"})
    with pytest.raises(ConfigError, match=r"max_drop_per_task names tasks not in evaluate.tasks: \['ner'\]"):
        load_config(None, {"registry.gate.max_drop_per_task": {"ner": 3.0}})
    with pytest.raises(ConfigError, match="metric moved to registry.gate"):
        load_config(None, {"registry.metric": "rougeL"})
    with pytest.raises(ConfigError, match="evaluate.metrics.ner"):
        load_config(None, {"evaluate.metrics": {"ner": "f1"}})  # a family name, not a metric


def test_a_version_number_from_the_command_line_is_a_version():
    # `--set infer.model=2` hands the YAML integer 2; the registry's versions are text.
    cfg = load_config(None, {"infer.model": 2, "serve.model": 7})
    assert (cfg.infer.model, cfg.serve.model) == ("2", "7")
    with pytest.raises(ConfigError, match="serve.model"):
        load_config(None, {"serve.model": True})


def test_serve_limits_are_checked():
    with pytest.raises(ConfigError) as e:
        load_config(None, {"serve.max_batch": 0, "serve.max_body_bytes": 10, "serve.port": 70000})
    assert all(k in str(e.value) for k in ("serve.max_batch", "serve.max_body_bytes", "serve.port"))
