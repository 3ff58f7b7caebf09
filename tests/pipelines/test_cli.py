import pytest
import yaml

from pipelines.cli import _config, main, parser


def test_data_flag_replaces_sources_and_set_overrides():
    args = parser().parse_args(["run", "--local", "--data", "a.jsonl", "b/*.jsonl", "--format", "dialogsum",
                                "--set", "train.max_steps=12", "--set", "storage.prefix=team"])
    cfg = _config(args)
    assert [(s.path, s.format) for s in cfg.data.sources] == [("a.jsonl", "dialogsum"), ("b/*.jsonl", "dialogsum")]
    assert cfg.train.max_steps == 12 and cfg.storage.prefix == "team"


def test_compile_writes_kfp_yaml(tmp_path):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--output", str(out)]) == 0
    assert yaml.safe_load_all(out.read_text()).__next__()["pipelineInfo"]["name"] == "mixtune"


def test_bad_config_exits_2_with_the_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {max_steps: 0}\n")
    assert main(["compile", "--config", str(cfg), "--output", str(tmp_path / "p.yaml")]) == 2
    assert "train.max_steps" in capsys.readouterr().err


def test_run_without_local_is_refused(capsys):
    assert main(["run"]) == 2
    assert "--local" in capsys.readouterr().err


def test_sample_command(tmp_path):
    out = tmp_path / "s.jsonl"
    assert main(["sample", "--out", str(out), "-n", "12"]) == 0
    assert len(out.read_text().splitlines()) == 12


def test_malformed_set_and_versions_are_one_line_errors(tmp_path, capsys):
    assert main(["compile", "--set", "train.max_steps", "--output", str(tmp_path / "p.yaml")]) == 2
    assert capsys.readouterr().err.strip() == ("--set 'train.max_steps': expected KEY=VALUE with a dotted key, "
                                               "e.g. --set train.max_steps=50")
    with pytest.raises(SystemExit) as e:
        main(["promote", "--version", "abc", "--workdir", str(tmp_path)])
    assert e.value.code == 2 and "'abc' is not a model version number" in capsys.readouterr().err


def test_commands_that_read_state_refuse_an_empty_folder(tmp_path, capsys):
    empty = tmp_path / "elsewhere"
    for argv in (["promote", "--version", "3"], ["rollback"], ["serve"], ["package-model", "--all"],
                 ["infer", "--data", "x.jsonl"], ["exec", "--", "true"]):
        assert main([argv[0], "--workdir", str(empty), *argv[1:]]) == 2, argv
        assert f"no mixtune state in {empty}" in capsys.readouterr().err
    assert not empty.exists()  # nothing was created there
