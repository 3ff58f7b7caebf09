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
